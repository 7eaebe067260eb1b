"""Runnable example apps: ``hypercorn examples.<name>:app``."""
