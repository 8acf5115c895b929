"""The common library every Upkeep service imports."""
