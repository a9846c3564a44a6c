"""tap-asana-vl: a Singer tap for Asana."""

__version__ = "0.1.0"
