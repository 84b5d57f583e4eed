"""The version of mlc: part of every cache key and library header, so it lives at
the bottom of the layer table, importable by every module without the package's API."""
__version__ = "0.1.0"
