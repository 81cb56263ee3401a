"""The influencer dashboard: pages, scripts and styles served by the API process."""
