"""The HTTP control plane (health and live streams for now; the dashboard grows here)."""
