"""The version, in a module of its own: the protocol core (``http/``) and packaging read it
without importing the server."""

__version__ = "0.1.0"
