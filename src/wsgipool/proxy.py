"""Trusted proxies: who may say who the client is, and what their forwarded headers mean.

Sans-IO and pure: nothing here touches a socket or a connection. ``TrustedPeers`` parses an
allow list (``--forwarded-allow-ips``, ``--proxy-allow-ips``) and answers whether an address
is on it; ``forwarded_changes`` reads the forwarded headers of a request's environ and
returns the environ keys they change, and ``apply_forwarded`` applies those. The gateway
calls them only for connections whose peer is trusted (decided once per connection).

The rules (docs/proxies.md says the same for users):

- ``Forwarded`` (RFC 7239), when present and well-formed, replaces ``X-Forwarded-For``,
  ``-Proto`` and ``-Host``. Its elements are walked from the right (the one our own proxy
  added) past those whose ``for=`` is a trusted address; the first other element (or the
  left-most, when all are trusted) gives ``for=`` -> ``REMOTE_ADDR``/``REMOTE_PORT``,
  ``proto=`` -> ``wsgi.url_scheme`` and ``host=`` -> ``HTTP_HOST``: all three describe the
  request the outermost trusted proxy received. An obfuscated or ``unknown`` ``for=``
  leaves ``REMOTE_ADDR`` alone.
- ``X-Forwarded-For``: the same walk over its addresses, right to left, skipping trusted
  ones; the first untrusted one (or the left-most) becomes ``REMOTE_ADDR``. A value that
  is not an IP address there stops the walk and changes nothing.
- ``X-Forwarded-Proto`` (``http``/``https``), ``-Host``, ``-Port`` and ``-Prefix``: the
  right-most value, the one our nearest proxy set, when valid; invalid values are ignored.
  ``-Port`` sets ``SERVER_PORT``; ``-Prefix`` is put in front of ``SCRIPT_NAME``.
- A host and a prefix end up in every URL the application builds (``url_for``, redirects),
  so they are held to what a proxy really sends, judged on the value the application sees:
  a host is a name or an address with an optional port (no percent-encoding), and a
  prefix a plain mount point (``/shop``), percent-decoded, with nothing in it that could
  make a URL that starts with it leave the site (see ``_valid_prefix``).
- Whatever changes, the original values are kept in ``environ["wsgipool.forwarded_from"]``
  (a dict of the changed keys to their values before; a key that was absent maps to None).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from .http import _abnf

FORWARDED_FROM = "wsgipool.forwarded_from"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The environ keys of the headers read here: a request with none of them costs one lookup
# each, in C (keys().isdisjoint).
_HEADER_KEYS = (
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
)
_SCHEMES = ("http", "https")

# A percent-encoded "/" or "\" in a prefix: decoded, it would split or end a segment.
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c)", re.IGNORECASE)
# A decoded prefix that is a plain mount point: "/"-separated segments, none empty (an
# empty one makes "//evil.example", a scheme-relative URL), none "." or "..", and no
# "\" (browsers read it as "/") or control character (browsers drop a tab or newline
# from a URL, so "/\t/evil.example" is "//evil.example" to them).
_MOUNT_POINT = re.compile(r"(?:/(?!\.\.?(?:/|\Z))[^/\\\x00-\x1f\x7f]+)+")


class TrustedPeers:
    """A parsed allow list: comma-separated IP addresses and CIDR networks, ``*`` for all.

    An empty list trusts nobody. Unix-socket peers (which have no address) are trusted
    whenever the list is not empty: only processes that may open the socket file can
    connect, which the file's mode decides (``--unix-socket-mode``).
    """

    __slots__ = ("_networks", "_trusts_text", "everyone", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"expected a comma-separated list of addresses, not {text!r}")
        self.text = text
        self.everyone = False
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item == "*":
                self.everyone = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.0/8, ::1, *)"
                ) from None
        self._networks = tuple(networks)
        # Parsing an address with ipaddress costs more than the rest of a short request's
        # connection set-up; peers repeat (a proxy, a load balancer), so remember answers.
        # lru_cache is thread-safe, and bounded against a flood of distinct addresses.
        self._trusts_text = functools.lru_cache(maxsize=4096)(self._trusts_uncached)

    @property
    def empty(self) -> bool:
        return not self.everyone and not self._networks

    def trusts_peer(self, peer: Any) -> bool:
        """Whether a socket peer (an address tuple, or a Unix socket's name) is trusted."""
        if isinstance(peer, tuple) and peer:
            return self.trusts(peer[0])
        return not self.empty

    def trusts(self, address: str | IPAddress) -> bool:
        """Whether an IP address (text or parsed) is on the list."""
        if self.everyone:
            return True
        if not self._networks:
            return False
        if isinstance(address, str):
            return self._trusts_text(address)
        return self._trusts_uncached(address)

    def _trusts_uncached(self, address: str | IPAddress) -> bool:
        if isinstance(address, str):
            parsed = _parse_ip(address)
            if parsed is None:
                return False
        else:
            parsed = address
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 from a dual-stack socket is 127.0.0.1.
            parsed = parsed.ipv4_mapped
        return any(parsed in network for network in self._networks)

    def __repr__(self) -> str:
        return f"TrustedPeers({self.text!r})"


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def parse_node(text: str) -> tuple[str, str] | None:
    """A node (RFC 7239 6, also an ``X-Forwarded-For`` entry) to (address, port text).

    Accepts ``192.0.2.1``, ``192.0.2.1:4711``, ``[2001:db8::1]``, ``[2001:db8::1]:4711`` and
    a bare IPv6 address; the port is "" when absent or obfuscated. None for ``unknown``, an
    obfuscated identifier, or anything that is not an IP address.
    """
    parsed = _parse_ip(text) if ":" in text and "[" not in text else None
    if parsed is not None and isinstance(parsed, ipaddress.IPv6Address):
        return str(parsed), ""
    match = _abnf.NODE.fullmatch(text)
    if match is None:
        return None
    ipv4, ipv6, port = match.groups()
    if ipv4 is not None:
        try:
            address: IPAddress = ipaddress.IPv4Address(ipv4)
        except ValueError:
            return None
    elif ipv6 is not None:
        try:
            address = ipaddress.IPv6Address(ipv6)
        except ValueError:
            return None
    else:
        return None  # unknown, or obfuscated
    if port is not None and int(port) > 65535:
        port = None
    return str(address), port or ""


def _unquote(value: str) -> str:
    """A forwarded-pair value without its quotes (RFC 9110 5.6.4 quoted-string)."""
    if not value.startswith('"'):
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    escaped = False
    for char in inner:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The elements of a ``Forwarded`` value, left to right, each a dict of its pairs
    (names lowercased, values unquoted; the first of a repeated name wins). None when the
    value is not a valid ``Forwarded`` list."""
    if _abnf.FORWARDED.fullmatch(value) is None:
        return None
    elements: list[dict[str, str]] = [{}]
    position = 0
    end = len(value)
    pair = _abnf.FORWARDED_PAIR.match
    while position < end:
        char = value[position]
        if char == ",":
            elements.append({})
            position += 1
        elif char in "; \t":
            position += 1
        else:
            match = pair(value, position)
            if match is None:  # Cannot happen after the fullmatch; refuse rather than loop.
                return None
            name = match.group(1).lower()
            elements[-1].setdefault(name, _unquote(match.group(2)))
            position = match.end()
    return [element for element in elements if element]


def _valid_port(text: str) -> bool:
    """Whether ``text`` is a port a client can connect to: 1-65535, ASCII digits."""
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) <= 65535


def _valid_host(value: str) -> str | None:
    """A forwarded ``host[:port]`` fit to build URLs with, or None.

    The Host grammar, and more: a name before any port (not ``:80`` alone), a port of
    1-65535 when there is a colon, and no percent-encoding (a proxy sends an IDN as
    punycode; decoded, ``%2F`` or ``%40`` would change what a URL built on it means).
    """
    value = value.strip()
    if "%" in value or _abnf.HOST.fullmatch(value) is None:
        return None
    # After HOST, the last ":" starts the port unless it is inside an IPv6 literal.
    name, colon, port = value.rpartition(":")
    if not colon or "]" in port:
        name, colon = value, ""
    if not name or (colon and not _valid_port(port)):
        return None
    return value


def _valid_prefix(value: str) -> str | None:
    """An ``X-Forwarded-Prefix`` value as ``SCRIPT_NAME`` (percent-decoded, latin-1 like
    ``PATH_INFO``), or None.

    A prefix is a fixed mount point such as ``/shop``; the application puts it in front of
    every URL it builds and redirects to. So it is checked after decoding, which is what
    the application sees: ``/%2Fevil.example`` would otherwise become ``//evil.example``.
    An encoded separator (``%2F``, ``%5C``) is refused outright.
    """
    value = value.rstrip("/")
    if _abnf.ABSOLUTE_PATH.fullmatch(value) is None:
        return None
    if "%" in value:
        if _ENCODED_SEPARATOR.search(value) is not None:
            return None
        value = unquote_to_bytes(value).decode("latin-1")
    return value if _MOUNT_POINT.fullmatch(value) is not None else None


def _valid_scheme(value: str) -> str | None:
    value = value.strip().lower()
    return value if value in _SCHEMES else None


def _last(value: str) -> str:
    """The right-most item of a comma-separated header value."""
    return value.rpartition(",")[2].strip()


def _pick(items: list[str], trusted: TrustedPeers) -> str | None:
    """Walk ``X-Forwarded-For``-style addresses from the right past trusted ones."""
    for item in reversed(items):
        node = parse_node(item)
        if node is None:
            return None
        if not trusted.trusts(node[0]):
            return item
    return items[0] if items else None


def forwarded_changes(environ: Mapping[str, Any], trusted: TrustedPeers) -> dict[str, Any]:
    """The environ keys the request's forwarded headers set, with their new values.

    ``trusted`` decides which proxies in a chain are skipped. Call this only when the
    connection's peer is trusted: the headers of anyone else mean nothing.
    """
    if environ.keys().isdisjoint(_HEADER_KEYS):
        return {}
    changes: dict[str, Any] = {}
    address: str | None = None
    scheme: str | None = None
    host: str | None = None
    forwarded = environ.get("HTTP_FORWARDED")
    elements = parse_forwarded(forwarded) if forwarded is not None else None
    if elements:
        chosen = elements[0]
        for element in reversed(elements):
            node = parse_node(element.get("for", ""))
            if node is None or not trusted.trusts(node[0]):
                chosen = element
                break
        address = chosen.get("for")
        scheme = _valid_scheme(chosen.get("proto", ""))
        host = _valid_host(chosen.get("host", ""))
    else:
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for is not None:
            items = [item.strip() for item in forwarded_for.split(",") if item.strip()]
            address = _pick(items, trusted)
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto is not None:
            scheme = _valid_scheme(_last(proto))
        forwarded_host = environ.get("HTTP_X_FORWARDED_HOST")
        if forwarded_host is not None:
            host = _valid_host(_last(forwarded_host))
    if address is not None:
        node = parse_node(address)
        if node is not None:
            changes["REMOTE_ADDR"], changes["REMOTE_PORT"] = node
    if scheme is not None:
        changes["wsgi.url_scheme"] = scheme
    if host is not None:
        changes["HTTP_HOST"] = host
    port = environ.get("HTTP_X_FORWARDED_PORT")
    if port is not None:
        port = _last(port)
        if _valid_port(port):
            changes["SERVER_PORT"] = str(int(port))
    prefix = environ.get("HTTP_X_FORWARDED_PREFIX")
    if prefix is not None:
        prefix = _valid_prefix(_last(prefix))
        if prefix is not None:
            changes["SCRIPT_NAME"] = prefix + environ.get("SCRIPT_NAME", "")
    # Only what differs: an unchanged key is no change to record.
    return {key: value for key, value in changes.items() if environ.get(key) != value}


def apply_forwarded(environ: dict[str, Any], trusted: TrustedPeers) -> None:
    """Apply ``forwarded_changes`` to ``environ`` and record the originals."""
    changes = forwarded_changes(environ, trusted)
    if changes:
        environ[FORWARDED_FROM] = {key: environ.get(key) for key in changes}
        environ.update(changes)


__all__ = [
    "FORWARDED_FROM",
    "TrustedPeers",
    "apply_forwarded",
    "forwarded_changes",
    "parse_forwarded",
    "parse_node",
]
