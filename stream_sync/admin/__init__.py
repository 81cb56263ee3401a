"""The local admin socket: how CLI commands reach a running server on the same machine.

A Unix socket in the data folder, mode 0600: whoever can read the data folder's
secrets may already do anything, and nobody else can connect. One JSON request
per connection, one JSON reply.
"""

SOCKET_NAME = "admin.sock"
