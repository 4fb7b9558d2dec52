"""cdrstream: turns telephone switch events into account-coded, versioned call records."""

__version__ = "0.1.0"
