"""Webhooks: lifecycle events POSTed to operators' endpoints, signed, retried, logged.

- `events`: which outbox events are webhooks, and the JSON each delivery carries.
- `signing`: the ``Stream-Sync-Signature`` header (HMAC-SHA256, Stripe's scheme).
- `endpoints`: registering endpoints; their secrets are encrypted like stream keys.
- `deliveries`: the delivery log and the retry policy.
- `fanout`: outbox rows into delivery rows, exactly once per endpoint.
- `sender`: due deliveries out over HTTP, each on its own.
- `runner`: the two as the monitor role's background task.

See docs/webhooks.md for what receivers get.
"""
