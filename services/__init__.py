"""Upkeep's services: ingest, rules, notifier, analytics."""
