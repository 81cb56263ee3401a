"""The stream monitor: measurements, health, the status machine and session history."""
