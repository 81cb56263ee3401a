"""Recordings of live streams: their rows (rows.py), their files (files.py, flv.py),
and a node's upkeep of both (upkeep.py). The writer is ingest/recording.py."""
