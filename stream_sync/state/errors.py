"""Errors of the shared-state engines."""

from __future__ import annotations


class StateUnavailable(Exception):
    """The shared state (Redis) did not answer in time: fall back to the database.

    The message is one line naming the server and the kind of failure; it never
    contains a key, a key id or any other argument of the failed call.
    """
