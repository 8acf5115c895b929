"""Runs Upkeep on this machine without Docker: Kafka (KRaft), the MongoDB-wire server, services.

``python -m deploy.local up|down|status|logs`` (what ``make up`` and friends call). The test
harness uses the same code with free ports and its own state directory.
"""
