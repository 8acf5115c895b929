"""Deployment: Compose file, image, monitoring configuration, and the local runner."""
