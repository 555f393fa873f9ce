"""The HTTP/1.1 grammar, written once, each pattern named for its ABNF rule.

Sources: RFC 9110 (semantics), RFC 9112 (HTTP/1.1 message syntax), RFC 5234 (core rules) and
RFC 3986 (URI). Check a pattern here against the spec line by line; every other module uses
these names and never writes its own byte class.

All patterns are ``str`` over code points 0-255: the head is decoded as latin-1 once (a
lossless, byte-for-byte mapping) and parsed as text, which is what the WSGI environ needs anyway.
The chunked-body patterns are compiled from the same text as ``bytes``. None of them can backtrack more than linearly: repetitions are
over disjoint classes or anchored by a byte the repetition cannot match.
"""

from __future__ import annotations

import re

# RFC 5234 B.1 core rules.
DIGIT = r"[0-9]"
HEXDIG = r"[0-9A-Fa-f]"
# The same set as bytes, for bytes.translate: a chunk-size line that is all HEXDIG (the
# common case, no chunk-ext) is checked without a regular expression.
HEXDIG_BYTES = b"0123456789ABCDEFabcdef"
SP = r" "
HTAB = r"\t"
VCHAR = r"[\x21-\x7e]"

# RFC 9110 5.6.3: OWS = *( SP / HTAB ); BWS = OWS.
OWS = r"[ \t]*"
BWS = OWS

# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#                         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
tchar = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
# token = 1*tchar
token = tchar + r"+"

# RFC 9110 5.5: obs-text = %x80-FF; field-vchar = VCHAR / obs-text
obs_text = r"[\x80-\xff]"
field_vchar = r"[\x21-\x7e\x80-\xff]"
# field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
# field-value = *field-content
# Written as "no CTL but HTAB" over the trimmed value: the same language, matched in one
# linear pass (the value has already lost its leading and trailing OWS).
field_value = r"[\t\x20-\x7e\x80-\xff]*"

# RFC 9110 5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
qdtext = r"[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]"
# quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
quoted_pair = r"\\[\t \x21-\x7e\x80-\xff]"
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
quoted_string = r'"(?:' + qdtext + r"|" + quoted_pair + r')*"'

# RFC 9112 3: method = token
method = token
# RFC 9112 2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT
HTTP_version = r"HTTP/(" + DIGIT + r")\.(" + DIGIT + r")"

# RFC 3986 3.3 / 3.4, as used by RFC 9112 3.2 request-target forms.
# pchar = unreserved / pct-encoded / sub-delims / ":" / "@"
unreserved = r"[-._~0-9A-Za-z]"
pct_encoded = r"%" + HEXDIG + HEXDIG
sub_delims = r"[!$&'()*+,;=]"
pchar = r"(?:[-._~0-9A-Za-z!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
segment = pchar + r"*"
# absolute-path = 1*( "/" segment )
absolute_path = r"(?:/" + segment + r")+"
# query = *( pchar / "/" / "?" )
query = r"(?:" + pchar + r"|[/?])*"
# origin-form = absolute-path [ "?" query ]
origin_form = absolute_path + r"(?:\?" + query + r")?"
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
scheme = r"[A-Za-z][-+.0-9A-Za-z]*"
# authority = [ userinfo "@" ] host [ ":" port ], kept loose on the host (IP-literal,
# IPv4address or reg-name characters): the gateway only copies it into HTTP_HOST.
host = r"(?:\[[0-9A-Fa-f:.vV]+\]|(?:[-._~0-9A-Za-z!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
port = DIGIT + r"*"
authority = host + r"(?::" + port + r")?"
# hier-part for http(s): "//" authority path-abempty, with path-abempty = *( "/" segment )
path_abempty = r"(?:/" + segment + r")*"
# absolute-form = absolute-URI = scheme ":" hier-part [ "?" query ]
absolute_form = (
    r"(" + scheme + r")://(" + authority + r")(" + path_abempty + r")(?:\?(" + query + r"))?"
)
# authority-form = uri-host ":" port
authority_form = host + r":" + port
# asterisk-form = "*"
asterisk_form = r"\*"

# RFC 9112 3: request-line = method SP request-target SP HTTP-version
# The target is matched as 1*VCHAR here and its form checked separately, so that a bad target
# and a bad line get told apart (and a request line can never match in more than one way).
request_line = r"(" + method + r") (" + VCHAR + r"+) " + HTTP_version

# RFC 9112 5: field-line = field-name ":" OWS field-value OWS; field-name = token
field_name = token

# RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
# status-code = 3DIGIT, from 100 to 599 (RFC 9110 15); its first digit is its class, and
# 1xx (interim) comes before a final response, never as one.
final_status_code = r"[2-5]" + DIGIT + DIGIT
interim_status_code = r"1" + DIGIT + DIGIT
# reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
reason_phrase = r"[\t \x21-\x7e\x80-\xff]+"
# A WSGI application's status is the status-line after "HTTP-version SP".
final_status = final_status_code + SP + r"(?:" + reason_phrase + r")?"
interim_status = interim_status_code + SP + r"(?:" + reason_phrase + r")?"

# RFC 9112 7.1: chunk-size = 1*HEXDIG
chunk_size = HEXDIG + r"+"
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
# chunk-ext-name = token; chunk-ext-val = token / quoted-string
chunk_ext = (
    r"(?:"
    + BWS
    + r";"
    + BWS
    + token
    + r"(?:"
    + BWS
    + r"="
    + BWS
    + r"(?:"
    + token
    + r"|"
    + quoted_string
    + r"))?)*"
)
# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (the size line alone here)
chunk_line = r"(" + chunk_size + r")" + chunk_ext

# RFC 9112 3.2.1 origin-form and 3.2.2 absolute-form, as tolerated: RFC 3986 forbids a few
# visible characters in a path or query (" < > [ ] ^ ` { | } \\) that real clients still send
# unencoded, and refusing them breaks ordinary applications without closing any hole. Still
# refused: anything outside VCHAR, a fragment ("#" never goes on the wire) and a "%" not
# followed by two HEXDIG (decoders disagree on what that means).
target_char_tolerated = r"[\x21\x22\x24\x26-\x7e]"
path_and_query_tolerated = r"(?:" + target_char_tolerated + r"|" + pct_encoded + r")*"
origin_form_tolerated = r"/" + path_and_query_tolerated
absolute_form_tolerated = (
    r"("
    + scheme
    + r")://("
    + authority
    + r")(/"
    + path_and_query_tolerated
    + r"|\?"
    + path_and_query_tolerated
    + r")?"
)

# Compiled forms used by the parser and the response checks.
REQUEST_LINE = re.compile(request_line)
ORIGIN_FORM = re.compile(origin_form_tolerated)
ABSOLUTE_FORM = re.compile(absolute_form_tolerated)
AUTHORITY_FORM = re.compile(authority_form)
FIELD_NAME = re.compile(field_name)
FIELD_VALUE = re.compile(field_value)
# field-line CRLF, with the value's OWS kept in the second group (the caller strips it):
# one character class for OWS and value, so matching never backtracks.
FIELD_LINE = re.compile(r"(" + field_name + r"):(" + field_value + r")\r\n")
# The field section: *( field-line CRLF )
FIELD_SECTION = re.compile(r"(?:" + field_name + r":" + field_value + r"\r\n)*")
TOKEN = re.compile(token)
# A response's status, as the gateway's start_response takes it.
FINAL_STATUS = re.compile(final_status)
INTERIM_STATUS = re.compile(interim_status)
# RFC 9110 8.6: Content-Length = 1*DIGIT (ASCII only: Python's int() would take "+1", " 1",
# "1_0" and non-ASCII digits, each a smuggling vector).
CONTENT_LENGTH = re.compile(DIGIT + r"+")
# RFC 9110 7.2: Host = uri-host [ ":" port ]
HOST = re.compile(authority)
# The chunk-size line is parsed from body bytes, not from the decoded head.
CHUNK_LINE = re.compile(chunk_line.encode("latin-1"))
# RFC 9112 7.1.2: trailer-section = *( field-line CRLF ), checked like any field line.
FIELD_LINE_BYTES = re.compile(
    (r"(" + field_name + r"):" + OWS + r"(" + field_value + r")").encode("latin-1")
)

# RFC 7239 4: the Forwarded header field.
# value = token / quoted-string
forwarded_value = r"(?:" + token + r"|" + quoted_string + r")"
# forwarded-pair = token "=" value
forwarded_pair = r"(" + token + r")=(" + forwarded_value + r")"
# forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
_pair = token + r"=" + forwarded_value
forwarded_element = r"(?:" + _pair + r")?(?:;(?:" + _pair + r")?)*"
# Forwarded = 1#forwarded-element, a list (RFC 9110 5.6.1: OWS "," OWS between elements,
# and empty elements are accepted).
forwarded = forwarded_element + r"(?:" + OWS + r"," + OWS + forwarded_element + r")*"
# RFC 7239 6: node = nodename [ ":" node-port ]
# nodename = IPv4address / "[" IPv6address "]" / "unknown" / obfnode
# obfnode = "_" 1*( ALPHA / DIGIT / "." / "_" / "-"); node-port = port / obfport
# port = 1*5DIGIT; obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")
# The addresses are matched loosely here (and checked with ipaddress by the caller).
obfnode = r"_[-._0-9A-Za-z]+"
node_port = r"(?:(" + DIGIT + r"{1,5})|" + obfnode + r")"
nodename = r"(?:([0-9.]+)|\[([0-9A-Fa-f:.]+)\]|unknown|" + obfnode + r")"
node = nodename + r"(?::" + node_port + r")?"

FORWARDED = re.compile(forwarded)
# One forwarded-pair, with name and (still quoted) value captured, for scanning a value
# FORWARDED already matched.
FORWARDED_PAIR = re.compile(forwarded_pair)
# Groups: IPv4address, IPv6address, port (each None when absent or obfuscated).
NODE = re.compile(node)
# RFC 3986 3.3 absolute-path, for X-Forwarded-Prefix.
ABSOLUTE_PATH = re.compile(absolute_path)
