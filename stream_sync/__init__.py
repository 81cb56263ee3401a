"""stream-sync: a live-streaming ingest platform."""

__version__ = "0.1.0"
