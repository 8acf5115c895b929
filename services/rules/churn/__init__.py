"""Churn risk: the BG/NBD model (Fader, Hardie & Lee, 2005), its fit, and the churn rule."""
