"""Unit tests for the sans-IO proxy code: trusted peers, forwarded headers, PROXY protocol."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgipool.config import BindAddress, Config, ConfigError, parse_mode
from wsgipool.http.errors import ProtocolError
from wsgipool.http.proxy_protocol import V2_SIGNATURE, ProxyHeader, parse_proxy_header
from wsgipool.proxy import (
    FORWARDED_FROM,
    TrustedPeers,
    apply_forwarded,
    forwarded_changes,
    parse_forwarded,
    parse_node,
)
from wsgipool.sockets import BindError, expand_binds, systemd_fds

# --- TrustedPeers ---------------------------------------------------------------------------


def test_trusted_peers_addresses_and_networks():
    trusted = TrustedPeers("127.0.0.1, 10.0.0.0/8,::1, 2001:db8::/32")
    assert trusted.trusts("127.0.0.1")
    assert trusted.trusts("10.1.2.3")
    assert not trusted.trusts("11.0.0.1")
    assert trusted.trusts("::1")
    assert trusted.trusts("2001:db8::5")
    assert trusted.trusts("::ffff:10.9.9.9")  # IPv4-mapped
    assert trusted.trusts("fe80::1%eth0") is False
    assert not trusted.trusts("not an ip")
    assert trusted.trusts_peer(("10.0.0.1", 5000))
    assert not trusted.trusts_peer(("192.0.2.1", 5000))
    assert trusted.trusts_peer("")  # a Unix socket peer
    assert not trusted.empty


def test_trusted_peers_star_and_empty():
    everyone = TrustedPeers("*")
    assert everyone.trusts("192.0.2.1") and everyone.trusts_peer(("::1", 1, 0, 0))
    nobody = TrustedPeers("")
    assert nobody.empty
    assert not nobody.trusts("127.0.0.1")
    assert not nobody.trusts_peer("")  # not even a Unix peer
    assert not nobody.trusts_peer(("127.0.0.1", 1))
    assert TrustedPeers(" , ").empty


@pytest.mark.parametrize("text", ["localhost", "10.0.0.0/33", "1.2.3", "*x"])
def test_trusted_peers_refuses_garbage(text):
    with pytest.raises(ValueError):
        TrustedPeers(text)
    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        Config(forwarded_allow_ips=text)
    with pytest.raises(ConfigError, match="proxy_allow_ips"):
        Config(proxy_allow_ips=text)


def test_config_defaults():
    config = Config()
    assert config.forwarded_allow_ips == "127.0.0.1,::1"
    assert config.forwarded_trust.trusts("127.0.0.1")
    assert config.proxy_protocol is False
    assert config.socket_mode is None
    with pytest.raises(ConfigError, match="proxy_protocol"):
        Config(proxy_protocol="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "mode"),
    [("", None), ("660", 0o660), ("0660", 0o660), ("0o600", 0o600), (0o666, 0o666), ("0", 0)],
)
def test_parse_mode(value, mode):
    assert parse_mode(value) == mode
    assert Config(unix_socket_mode=value).socket_mode == mode


@pytest.mark.parametrize("value", ["rw", "999", "0o1000", "8", 0o1000, -1, True, "0x1"])
def test_parse_mode_refuses(value):
    with pytest.raises(ConfigError, match="unix_socket_mode"):
        parse_mode(value)


# --- nodes and Forwarded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.43", ("192.0.2.43", "")),
        ("192.0.2.43:47011", ("192.0.2.43", "47011")),
        ("[2001:db8:cafe::17]", ("2001:db8:cafe::17", "")),
        ("[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", "4711")),
        ("2001:db8::1", ("2001:db8::1", "")),
        ("192.0.2.43:_port", ("192.0.2.43", "")),
        ("192.0.2.43:99999", ("192.0.2.43", "")),
        ("unknown", None),
        ("_hidden", None),
        ("_SEVKISEK", None),
        ("300.1.1.1", None),
        ("[zz::1]", None),
        ("example.com", None),
        ("", None),
        ("1.2.3.4:", None),
    ],
)
def test_parse_node(text, expected):
    assert parse_node(text) == expected


def test_parse_forwarded():
    assert parse_forwarded('for="_gazonk"') == [{"for": "_gazonk"}]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [
        {"for": "[2001:db8:cafe::17]:4711"}
    ]
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}
    ]
    assert parse_forwarded("for=192.0.2.43, for=198.51.100.17") == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17"},
    ]
    assert parse_forwarded('for=1.2.3.4;host="a,b;c", , for=5.6.7.8') == [
        {"for": "1.2.3.4", "host": "a,b;c"},
        {"for": "5.6.7.8"},
    ]
    assert parse_forwarded(r'host="a\"b"') == [{"host": 'a"b'}]
    assert parse_forwarded("for=1.2.3.4;for=5.6.7.8") == [{"for": "1.2.3.4"}]  # first wins


@pytest.mark.parametrize(
    "value", ["for", "for=", 'for="unterminated', "for=1.2.3.4 ;proto=http", "=x", "for=a b"]
)
def test_parse_forwarded_refuses(value):
    assert parse_forwarded(value) is None


# --- forwarded_changes ------------------------------------------------------------------------

TRUSTED = TrustedPeers("127.0.0.1,10.0.0.0/8")


def base(**headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "5555",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "internal:8000",
        "SERVER_PORT": "8000",
        "SCRIPT_NAME": "",
    }
    environ.update(headers)
    return environ


def test_no_headers_no_changes():
    assert forwarded_changes(base(), TRUSTED) == {}


def test_x_forwarded_for_walks_from_the_right_past_trusted():
    environ = base(HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9, 10.0.0.2, 127.0.0.1")
    assert forwarded_changes(environ, TRUSTED) == {
        "REMOTE_ADDR": "203.0.113.9",
        "REMOTE_PORT": "",
    }


def test_x_forwarded_for_all_trusted_takes_leftmost():
    environ = base(HTTP_X_FORWARDED_FOR="10.0.0.5, 10.0.0.2")
    assert forwarded_changes(environ, TRUSTED)["REMOTE_ADDR"] == "10.0.0.5"
    environ = base(HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.9")
    assert forwarded_changes(environ, TrustedPeers("*"))["REMOTE_ADDR"] == "198.51.100.1"


def test_x_forwarded_for_garbage_changes_nothing():
    for value in ("nonsense", "6.6.6.6, nonsense, 10.0.0.1", "", " , "):
        assert "REMOTE_ADDR" not in forwarded_changes(base(HTTP_X_FORWARDED_FOR=value), TRUSTED)


def test_x_forwarded_for_with_ports_and_ipv6():
    environ = base(HTTP_X_FORWARDED_FOR="[2001:db8::1]:443")
    assert forwarded_changes(environ, TRUSTED) == {
        "REMOTE_ADDR": "2001:db8::1",
        "REMOTE_PORT": "443",
    }
    environ = base(HTTP_X_FORWARDED_FOR="2001:db8::2")
    assert forwarded_changes(environ, TRUSTED)["REMOTE_ADDR"] == "2001:db8::2"


def test_x_forwarded_proto_host_port_prefix():
    environ = base(
        HTTP_X_FORWARDED_PROTO="HTTPS",
        HTTP_X_FORWARDED_HOST="example.com",
        HTTP_X_FORWARDED_PORT="443",
        HTTP_X_FORWARDED_PREFIX="/app/",
        SCRIPT_NAME="/root",
    )
    assert forwarded_changes(environ, TRUSTED) == {
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "example.com",
        "SERVER_PORT": "443",
        "SCRIPT_NAME": "/app/root",
    }


def test_x_forwarded_rightmost_values_win():
    environ = base(
        HTTP_X_FORWARDED_PROTO="http, https",
        HTTP_X_FORWARDED_HOST="evil.example, good.example:8443",
        HTTP_X_FORWARDED_PORT="1, 8443",
    )
    changes = forwarded_changes(environ, TRUSTED)
    assert changes["wsgi.url_scheme"] == "https"
    assert changes["HTTP_HOST"] == "good.example:8443"
    assert changes["SERVER_PORT"] == "8443"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("HTTP_X_FORWARDED_PROTO", "ftp"),
        ("HTTP_X_FORWARDED_PROTO", ""),
        ("HTTP_X_FORWARDED_HOST", "bad host"),
        ("HTTP_X_FORWARDED_HOST", "a/b"),
        ("HTTP_X_FORWARDED_HOST", ""),
        ("HTTP_X_FORWARDED_PORT", "65536"),
        ("HTTP_X_FORWARDED_PORT", "0"),
        ("HTTP_X_FORWARDED_PORT", "-1"),
        ("HTTP_X_FORWARDED_PORT", "\u0663"),  # a non-ASCII digit
        ("HTTP_X_FORWARDED_PORT", "443443"),
        ("HTTP_X_FORWARDED_PREFIX", "app"),
        ("HTTP_X_FORWARDED_PREFIX", "/"),
        ("HTTP_X_FORWARDED_PREFIX", "/a b"),
        ("HTTP_X_FORWARDED_PREFIX", "//x"),
    ],
)
def test_invalid_values_are_ignored(key, value):
    assert forwarded_changes(base(**{key: value}), TRUSTED) == {}


def test_prefix_is_percent_decoded():
    changes = forwarded_changes(base(HTTP_X_FORWARDED_PREFIX="/caf%C3%A9"), TRUSTED)
    assert changes["SCRIPT_NAME"] == "/caf\xc3\xa9"  # latin-1, like PATH_INFO


@pytest.mark.parametrize(
    "prefix",
    [
        "/%2Fevil.example",  # decodes to //evil.example: scheme-relative
        "/%2fevil.example",
        "/shop%2F%2Fevil.example",
        "/a%2Fb",  # a "/" inside a segment: refused outright
        "/%5Cevil.example",  # "/\evil.example": browsers read "\" as "/"
        "/%5c%5cevil.example",
        "/%09/evil.example",  # browsers drop the tab: "//evil.example"
        "/%0A/evil.example",
        "/%0D/evil.example",
        "/shop%00",
        "/shop%1F",
        "/shop%7F",
        "/%2E%2E",
        "/shop/%2e",
        "/shop/..",
        "/./shop",
        "/shop//x",
    ],
)
def test_prefix_is_checked_after_decoding(prefix):
    environ = base(HTTP_X_FORWARDED_PREFIX=prefix, SCRIPT_NAME="/root")
    assert forwarded_changes(environ, TRUSTED) == {}


@pytest.mark.parametrize(
    ("prefix", "script_name"),
    [
        ("/shop", "/shop"),
        ("/shop/v2/", "/shop/v2"),
        ("/my%20shop", "/my shop"),
        ("/.well-known", "/.well-known"),
        ("/a...b/...", "/a...b/..."),
        ("/@team:x", "/@team:x"),
    ],
)
def test_plain_prefixes_are_taken(prefix, script_name):
    changes = forwarded_changes(base(HTTP_X_FORWARDED_PREFIX=prefix), TRUSTED)
    assert changes == {"SCRIPT_NAME": script_name}


@pytest.mark.parametrize(
    "host",
    [
        "evil.example%2F.good.example",  # decoded by browsers: a "/" in the host
        "evil.example%40good.example",
        ":443",  # a port without a name
        "good.example:",
        "good.example:0",
        "good.example:65536",
        "[2001:db8::1]:",
        "evil.example/path",
        "user@evil.example",
    ],
)
def test_forwarded_host_must_build_a_sound_url(host):
    assert forwarded_changes(base(HTTP_X_FORWARDED_HOST=host), TRUSTED) == {}
    quoted = base(HTTP_FORWARDED=f'host="{host}"')
    assert "HTTP_HOST" not in forwarded_changes(quoted, TRUSTED)


@pytest.mark.parametrize(
    "host",
    ["good.example", "good.example:8443", "[2001:db8::1]", "[2001:db8::1]:443", "10.0.0.1:1"],
)
def test_forwarded_hosts_that_are_taken(host):
    assert forwarded_changes(base(HTTP_X_FORWARDED_HOST=host), TRUSTED) == {"HTTP_HOST": host}


def test_forwarded_header():
    environ = base(HTTP_FORWARDED='for="[2001:db8::17]:4711";proto=https;host=example.com')
    assert forwarded_changes(environ, TRUSTED) == {
        "REMOTE_ADDR": "2001:db8::17",
        "REMOTE_PORT": "4711",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "example.com",
    }


def test_forwarded_chain_uses_the_first_untrusted_element():
    environ = base(
        HTTP_FORWARDED="for=6.6.6.6;proto=http;host=evil, "
        "for=203.0.113.5;proto=https;host=shop.example, for=10.0.0.3;proto=http;host=lb"
    )
    assert forwarded_changes(environ, TRUSTED) == {
        "REMOTE_ADDR": "203.0.113.5",
        "REMOTE_PORT": "",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "shop.example",
    }


def test_forwarded_obfuscated_keeps_remote_addr():
    environ = base(HTTP_FORWARDED="for=_hidden;proto=https, for=10.0.0.1")
    assert forwarded_changes(environ, TRUSTED) == {"wsgi.url_scheme": "https"}
    environ = base(HTTP_FORWARDED="for=unknown")
    assert forwarded_changes(environ, TRUSTED) == {}


def test_forwarded_takes_precedence_over_x_forwarded():
    environ = base(
        HTTP_FORWARDED="for=198.51.100.7;proto=https",
        HTTP_X_FORWARDED_FOR="6.6.6.6",
        HTTP_X_FORWARDED_PROTO="http",
        HTTP_X_FORWARDED_HOST="evil.example",
        HTTP_X_FORWARDED_PORT="8443",
    )
    assert forwarded_changes(environ, TRUSTED) == {
        "REMOTE_ADDR": "198.51.100.7",
        "REMOTE_PORT": "",
        "wsgi.url_scheme": "https",
        "SERVER_PORT": "8443",  # no Forwarded equivalent: still applies
    }


def test_malformed_forwarded_falls_back_to_x_forwarded():
    environ = base(HTTP_FORWARDED="for=", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert forwarded_changes(environ, TRUSTED)["REMOTE_ADDR"] == "198.51.100.7"


def test_apply_forwarded_records_originals():
    environ = base(HTTP_X_FORWARDED_FOR="198.51.100.7", HTTP_X_FORWARDED_PROTO="https")
    apply_forwarded(environ, TRUSTED)
    assert environ["REMOTE_ADDR"] == "198.51.100.7"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ[FORWARDED_FROM] == {
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "5555",
        "wsgi.url_scheme": "http",
    }
    assert environ["HTTP_X_FORWARDED_FOR"] == "198.51.100.7"  # the header stays
    untouched = base()
    apply_forwarded(untouched, TRUSTED)
    assert FORWARDED_FROM not in untouched


# --- PROXY protocol v1 ------------------------------------------------------------------------


def test_v1_tcp4():
    data = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n"
    header = parse_proxy_header(data)
    assert header == ProxyHeader(
        1, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.1", 443), data.index(b"GET")
    )


def test_v1_tcp6():
    data = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"
    header = parse_proxy_header(data)
    assert header is not None
    assert header.family == "TCP6"
    assert header.source == ("2001:db8::1", 65535)
    assert header.destination == ("2001:db8::2", 0)
    assert header.consumed == len(data)


@pytest.mark.parametrize("data", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"])
def test_v1_unknown(data):
    header = parse_proxy_header(data + b"rest")
    assert header is not None
    assert header.family == "UNKNOWN"
    assert header.source is None
    assert header.consumed == len(data)


def test_v1_incremental():
    data = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"
    for end in range(len(data)):
        assert parse_proxy_header(data[:end]) is None, end
    assert parse_proxy_header(data) is not None


def test_v1_longest_line_is_107_bytes():
    longest = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    assert len(longest) == 107
    assert parse_proxy_header(longest) is not None
    with pytest.raises(ProtocolError):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * (107 - 15) + b"\r\n")
    with pytest.raises(ProtocolError):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 200)  # no CRLF within 107 bytes


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 2001:db8::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.\xff 1 2\r\n",
        b"PROXY \r\n",
        b"PROXX",
        b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x00",
        b"\r\nGET",
    ],
)
def test_malformed_headers(data):
    with pytest.raises(ProtocolError) as info:
        parse_proxy_header(data)
    assert info.value.status == 400


# --- PROXY protocol v2 ------------------------------------------------------------------------


def v2(command: int, family: int, transport: int, body: bytes) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family << 4 | transport])
        + struct.pack("!H", len(body))
        + body
    )


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!HH", sport, dport)
    )


def test_v2_inet():
    data = v2(1, 1, 1, inet("192.0.2.1", "198.51.100.1", 56324, 443))
    header = parse_proxy_header(data + b"GET /")
    assert header == ProxyHeader(
        2, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.1", 443), len(data)
    )


def test_v2_inet6_with_tlvs():
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03\x00\x00\x00"  # ALPN, NOOP padding
    data = v2(1, 2, 1, inet6("2001:db8::1", "2001:db8::2", 1, 2) + tlvs)
    header = parse_proxy_header(data)
    assert header is not None
    assert header.source == ("2001:db8::1", 1)
    assert header.destination == ("2001:db8::2", 2)
    assert header.consumed == len(data)


def test_v2_unix():
    body = b"/run/client.sock".ljust(108, b"\x00") + b"/run/app.sock".ljust(108, b"\x00")
    header = parse_proxy_header(v2(1, 3, 1, body))
    assert header is not None
    assert header.family == "UNIX"
    assert header.source == "/run/client.sock"
    assert header.destination == "/run/app.sock"


def test_v2_local_and_unspec_carry_no_client():
    local = parse_proxy_header(v2(0, 1, 1, inet("1.2.3.4", "5.6.7.8", 1, 2)))
    assert local is not None and local.command == "LOCAL" and local.source is None
    local_empty = parse_proxy_header(v2(0, 0, 0, b""))
    assert local_empty is not None and local_empty.command == "LOCAL"
    unspec = parse_proxy_header(v2(1, 0, 0, b"\x00" * 4))
    assert unspec is not None and unspec.command == "PROXY" and unspec.source is None


def test_v2_incremental():
    data = v2(1, 1, 1, inet("192.0.2.1", "198.51.100.1", 56324, 443) + b"\x04\x00\x01\x00")
    for end in range(len(data)):
        assert parse_proxy_header(data[:end]) is None, end
    header = parse_proxy_header(bytearray(data))
    assert header is not None and header.consumed == len(data)


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
        V2_SIGNATURE + b"\x21\x41\x00\x0c" + b"\x00" * 12,  # family 4
        V2_SIGNATURE + b"\x21\x13\x00\x0c" + b"\x00" * 12,  # transport 3
        V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # datagram
        V2_SIGNATURE + b"\x21\x11\x00\x08" + b"\x00" * 8,  # address block too short
        V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\x00" * 12,  # INET6 needs 36
        V2_SIGNATURE + b"\x21\x11\x00\x0e" + b"\x00" * 14,  # 2 bytes: a truncated TLV
        V2_SIGNATURE + b"\x21\x11\x00\x10" + b"\x00" * 12 + b"\x01\x00\x05x",  # TLV too long
        V2_SIGNATURE[:5] + b"X",
    ],
)
def test_v2_malformed(data):
    with pytest.raises(ProtocolError):
        parse_proxy_header(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_error(data):
    for candidate in (data, b"PROXY " + data, V2_SIGNATURE + data):
        try:
            header = parse_proxy_header(candidate)
        except ProtocolError:
            continue
        if header is not None:
            assert 0 < header.consumed <= len(candidate)


@settings(max_examples=200, deadline=None)
@given(
    st.ip_addresses(v=4),
    st.ip_addresses(v=4),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.binary(max_size=20),
)
def test_v1_and_v2_round_trip(src, dst, sport, dport, rest):
    line = f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()
    binary = v2(1, 1, 1, inet(str(src), str(dst), sport, dport))
    for data in (line, binary):
        header = parse_proxy_header(data + rest)
        assert header is not None
        assert header.source == (str(src), sport)
        assert header.destination == (str(dst), dport)
        assert header.consumed == len(data)


# --- systemd socket activation ----------------------------------------------------------------


def test_bind_systemd_parses():
    assert BindAddress.parse("systemd") == BindAddress("systemd")
    assert str(BindAddress("systemd")) == "systemd"
    assert Config(bind=["systemd", "127.0.0.1:0"]).binds[0].kind == "systemd"


def test_systemd_fds_consumes_the_variables():
    import os

    environ = {"LISTEN_FDS": "0", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "x"}
    with pytest.raises(BindError, match="LISTEN_FDS"):
        systemd_fds(environ)
    assert environ == {}
    with pytest.raises(BindError, match="LISTEN_PID"):
        systemd_fds({"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    with pytest.raises(BindError, match="not set"):
        systemd_fds({})
    binds = [BindAddress.parse("127.0.0.1:0")]
    assert expand_binds(binds, {}) == binds  # no systemd bind: the environment is not read
