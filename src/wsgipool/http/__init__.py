"""The sans-IO HTTP/1.1 protocol core: no sockets, no threads, bytes in and bytes out."""

from .errors import ProtocolError
from .parser import ChunkedBody, FixedLengthBody, HeadScanner, Limits, Request, parse_head

__all__ = [
    "ChunkedBody",
    "FixedLengthBody",
    "HeadScanner",
    "Limits",
    "ProtocolError",
    "Request",
    "parse_head",
]
