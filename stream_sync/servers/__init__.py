"""The ingest server catalog: the operator's list of RTMP ingest servers.

Only configuration lives here (name, URL, region, capacity, draining); live load
is in the state layer. Channels point at a server through
``credentials.set_channel_server``.
"""

from stream_sync.servers.errors import InvalidServer, ServerError, ServerExists, ServerNotFound
from stream_sync.servers.service import (
    MAX_CAPACITY,
    ServerInfo,
    add_server,
    get_server,
    list_servers,
    remove_server,
    update_server,
)

__all__ = [
    "MAX_CAPACITY",
    "InvalidServer",
    "ServerError",
    "ServerExists",
    "ServerInfo",
    "ServerNotFound",
    "add_server",
    "get_server",
    "list_servers",
    "remove_server",
    "update_server",
]
