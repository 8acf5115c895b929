"""The maintenance rules shipped with Upkeep (registered in :mod:`services.rules.registry`)."""
