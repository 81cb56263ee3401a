"""Where a live stream goes besides the monitor: push targets and recordings.

- `destinations`: push target URLs, parsed and checked; what logs may show of them.
- `targets`: a channel's own targets in the database, keys encrypted like ours.
- `plan`: what a starting publish feeds, for many channels in one query.

The ingest side (pushing, writing files) is in ``stream_sync.ingest``.
"""
