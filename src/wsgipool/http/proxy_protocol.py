"""Sans-IO parsing of the PROXY protocol header (HAProxy's spec, versions 1 and 2).

A proxy that speaks it sends one header at the very start of a connection, before any HTTP,
saying which client it is relaying: ``parse_proxy_header(buffer)`` returns None while the
header is incomplete, a ``ProxyHeader`` (with how many bytes it took) once it is whole, and
raises ``ProtocolError(400, ...)`` for anything else. The caller closes the connection on
that error without an HTTP response: the peer is a proxy that got its configuration wrong.

Version 1 is one text line of at most 107 bytes::

    PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\\r\\n
    PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\\r\\n
    PROXY UNKNOWN ...\\r\\n

Version 2 is binary: a 12-byte signature, version and command, family and transport, a
16-bit length, then the addresses and optional TLVs (which are checked for framing and
skipped). ``LOCAL`` (a health check by the proxy itself), ``UNKNOWN`` and ``AF_UNSPEC``
carry no client: the connection's real peer stands.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import ProtocolError

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # The longest v1 line, CRLF included.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LENGTH = 16  # Signature, version/command, family/transport, length.

# v2 family (high nibble) and transport (low nibble) of byte 14.
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0, 1, 2, 3
UNSPEC, STREAM, DGRAM = 0, 1, 2
# Address block sizes by family.
_ADDRESS_SIZES = {AF_INET: 12, AF_INET6: 36, AF_UNIX: 216}
_FAMILY_NAMES = {AF_UNSPEC: "UNKNOWN", AF_INET: "TCP4", AF_INET6: "TCP6", AF_UNIX: "UNIX"}

Address = tuple[str, int] | str


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY header.

    ``command`` is ``"PROXY"`` (relayed: ``source`` is the client) or ``"LOCAL"``;
    ``family`` is ``"TCP4"``, ``"TCP6"``, ``"UNIX"`` or ``"UNKNOWN"``. ``source`` and
    ``destination`` are ``(address, port)`` tuples, Unix socket paths, or None when the
    header names no client. ``consumed`` is the header's length in bytes.
    """

    version: int
    command: str
    family: str
    source: Address | None
    destination: Address | None
    consumed: int


def _bad(detail: str) -> ProtocolError:
    return ProtocolError(400, f"bad PROXY protocol header: {detail}")


def parse_proxy_header(data: bytes | bytearray) -> ProxyHeader | None:
    """Parse the PROXY header at the start of ``data``; None: not all of it is here yet."""
    if data[:1] == V2_SIGNATURE[:1]:
        if len(data) < len(V2_SIGNATURE):
            if V2_SIGNATURE.startswith(bytes(data)):
                return None
            raise _bad("not a PROXY protocol header")
        if data[: len(V2_SIGNATURE)] != V2_SIGNATURE:
            raise _bad("not a PROXY protocol header")
        return _parse_v2(data)
    if len(data) < len(V1_PREFIX):
        if V1_PREFIX.startswith(bytes(data)):
            return None
        raise _bad("not a PROXY protocol header")
    if data[: len(V1_PREFIX)] != V1_PREFIX:
        raise _bad("not a PROXY protocol header")
    return _parse_v1(data)


# --- version 1 ------------------------------------------------------------------------------


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise _bad("v1 line longer than 107 bytes")
        return None
    if end == 0 or data[end - 1] != 13:
        raise _bad("v1 line does not end with CRLF")
    line = bytes(data[: end - 1])
    consumed = end + 1
    if b"\r" in line:
        raise _bad("CR inside the v1 line")
    parts = line.split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        # "The receiver must ignore anything presented before the CRLF."
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, consumed)
    if len(parts) != 6:
        raise _bad("v1 needs: PROXY TCP4|TCP6 source destination source-port destination-port")
    _, protocol, source, destination, source_port, destination_port = parts
    if protocol == b"TCP4":
        make: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.IPv4Address
    elif protocol == b"TCP6":
        make = ipaddress.IPv6Address
    else:
        raise _bad(f"unknown v1 protocol {protocol!r}")
    try:
        # ASCII by construction once decoded from these checked bytes.
        source_ip = str(make(_ascii(source)))
        destination_ip = str(make(_ascii(destination)))
    except ValueError:
        raise _bad(f"bad {protocol.decode()} address") from None
    return ProxyHeader(
        1,
        "PROXY",
        protocol.decode(),
        (source_ip, _v1_port(source_port)),
        (destination_ip, _v1_port(destination_port)),
        consumed,
    )


def _ascii(field: bytes) -> str:
    if not field or not field.isascii():
        raise ValueError("not ASCII")
    return field.decode("ascii")


def _v1_port(field: bytes) -> int:
    # 0..65535 in decimal, no sign, no leading zero.
    if (
        not field
        or len(field) > 5
        or not field.isdigit()
        or not field.isascii()
        or (field[:1] == b"0" and len(field) > 1)
        or int(field) > 65535
    ):
        raise _bad(f"bad v1 port {field[:8]!r}")
    return int(field)


# --- version 2 ------------------------------------------------------------------------------


def _parse_v2(data: bytes | bytearray) -> ProxyHeader | None:
    if len(data) < V2_HEADER_LENGTH:
        return None
    version_command, family_transport, length = struct.unpack_from("!BBH", data, 12)
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        raise _bad(f"unknown version {version}")
    if command not in (0, 1):
        raise _bad(f"unknown v2 command {command}")
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family not in _FAMILY_NAMES:
        raise _bad(f"unknown v2 address family {family}")
    if transport not in (UNSPEC, STREAM, DGRAM):
        raise _bad(f"unknown v2 transport {transport}")
    consumed = V2_HEADER_LENGTH + length
    if len(data) < consumed:
        return None
    block = bytes(data[V2_HEADER_LENGTH:consumed])
    address_size = _ADDRESS_SIZES.get(family, 0)
    if len(block) < address_size:
        raise _bad(f"v2 address block of {len(block)} bytes, {address_size} needed")
    if family != AF_UNSPEC:
        # AF_UNSPEC defines no address layout: its whole block is skipped unread.
        _check_tlvs(block[address_size:])
    name = _FAMILY_NAMES[family]
    if command == 0:
        # LOCAL: the proxy's own connection (a health check); the addresses mean nothing.
        return ProxyHeader(2, "LOCAL", name, None, None, consumed)
    if family == AF_UNSPEC or transport == UNSPEC:
        return ProxyHeader(2, "PROXY", "UNKNOWN", None, None, consumed)
    if transport == DGRAM:
        raise _bad("a datagram client on a stream connection")
    source: Address
    destination: Address
    if family == AF_INET:
        source_ip, destination_ip, source_port, destination_port = struct.unpack_from(
            "!4s4sHH", block
        )
        source = (str(ipaddress.IPv4Address(source_ip)), source_port)
        destination = (str(ipaddress.IPv4Address(destination_ip)), destination_port)
    elif family == AF_INET6:
        source_ip, destination_ip, source_port, destination_port = struct.unpack_from(
            "!16s16sHH", block
        )
        source = (str(ipaddress.IPv6Address(source_ip)), source_port)
        destination = (str(ipaddress.IPv6Address(destination_ip)), destination_port)
    else:
        source = _unix_path(block[:108])
        destination = _unix_path(block[108:216])
    return ProxyHeader(2, "PROXY", name, source, destination, consumed)


def _unix_path(raw: bytes) -> str:
    return raw.partition(b"\x00")[0].decode("utf-8", "surrogateescape")


def _check_tlvs(tlvs: bytes) -> None:
    """Walk the TLVs after the addresses: each must fit in the header. Their values are
    not used."""
    position = 0
    end = len(tlvs)
    while position < end:
        if end - position < 3:
            raise _bad("truncated v2 TLV")
        (size,) = struct.unpack_from("!H", tlvs, position + 1)
        position += 3 + size
        if position > end:
            raise _bad("v2 TLV longer than the header")


__all__ = ["ProxyHeader", "parse_proxy_header"]
