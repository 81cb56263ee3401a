"""The two ways an RTMP conversation goes wrong.

Like h11, we separate "the peer broke the protocol" from "our own code misused the
API": the first closes one connection with a log line, the second is a bug.
Messages never include payload bytes, so they are safe to log (a stream key is
payload).
"""


class ProtocolError(Exception):
    """The peer sent something malformed, oversized or out of sequence."""


class HandshakeTimeoutError(ProtocolError):
    """The peer did not finish the handshake in time."""


class IdleTimeoutError(ProtocolError):
    """The peer sent nothing for longer than the idle timeout."""


class PublishTimeoutError(ProtocolError):
    """The peer connected but did not ask to publish in time (a loiterer, not an encoder)."""


class LocalProtocolError(Exception):
    """The application called the connection API in a state where that is wrong."""
