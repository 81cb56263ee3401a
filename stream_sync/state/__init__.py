"""Shared state between components: publish locks and the event bus.

Small interfaces with an in-process engine for the embedded default; the Redis
engine for multi-node deployments implements the same protocols.
"""
