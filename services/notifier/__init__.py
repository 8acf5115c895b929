"""The notifier service (see its issue); the directory is reserved so the layout is final."""
