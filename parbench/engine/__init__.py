"""Training and evaluation: one engine for every method."""
