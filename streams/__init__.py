"""cdrstream: turns telephone switch events into account-coded, versioned call records."""

__version__ = "0.1.0"

from streams import native as _native

_native.choose_core()  # before any core module is imported: compiled, or all from source
