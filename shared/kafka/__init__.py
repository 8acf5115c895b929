"""Kafka plumbing shared by every service: clients, publisher, consumer loop, dead letters."""
