"""Data URLs as Butane writes them and as Ignition reads them.

Butane inlines file contents as the *shortest* of three ``data:`` URLs (percent-escaped,
base64, gzip+base64), so `encode` does the same. Ignition parses data URLs with
vincent-petithory/dataurl, whose grammar is stricter than RFC 2397 in places (a literal
``"``, ``#`` or space in the data is an error), so `decode` follows that grammar and the
harness rejects exactly the URLs Ignition would.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import urllib.parse

#: RFC 2396 "unreserved" marks; with letters and digits these are never escaped.
_UNRESERVED_MARKS = "-_.!~*'()"
_KEPT_BYTES = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + _UNRESERVED_MARKS.encode()
)
_TSPECIALS = set('()<>@,;:\\"/[]?=')
_URL_UNWISE = set(' <>#"{}|\\^[]`')
_BASE64_RE = re.compile(r"[A-Za-z0-9+/=]*")


class DataURLError(ValueError):
    """A ``data:`` URL Ignition would refuse; the message is the parser's reason."""


def escape(data: bytes) -> str:
    """Percent-escape everything but RFC 2396 unreserved bytes (Butane's `dataurl.Escape`)."""
    return urllib.parse.quote(data, safe=_UNRESERVED_MARKS)


def encode(
    contents: bytes, *, compression: str | None = None, allow_gzip: bool = True
) -> tuple[str, str]:
    """Return ``(url, compression)`` the way Butane's ``MakeDataURL`` picks them.

    Without a user-given compression the result always carries one (``""`` or
    ``"gzip"``): Butane writes ``""`` explicitly so a merged child config never inherits
    its parent's setting. A user-given compression means the bytes are already
    compressed, so they are encoded as they are and the compression is kept.
    """
    # Compare lengths before building the escaped form: for a large binary it is slow
    # to build, and it would lose to base64 anyway.
    escaped_len = len(contents) + 2 * len(contents.translate(None, _KEPT_BYTES))
    b64 = ";base64," + base64.b64encode(contents).decode("ascii")
    opaque = b64 if len(b64) < 1 + escaped_len else "," + escape(contents)
    if compression:
        return "data:" + opaque, compression
    chosen = ""
    if allow_gzip:
        packed = gzip.compress(contents, compresslevel=9, mtime=0)
        gz = ";base64," + base64.b64encode(packed).decode("ascii")
        if len(gz) + len("gzip") < len(opaque):
            opaque, chosen = gz, "gzip"
    return "data:" + opaque, chosen


def _is_token(ch: str) -> bool:
    return ch.isascii() and ch.isprintable() and ch != " " and ch not in _TSPECIALS


def _is_url_char(ch: str) -> bool:
    return ch.isascii() and 0x20 <= ord(ch) < 0x7F and ch not in _URL_UNWISE


def _unescape(text: str) -> bytes:
    """RFC 2396 unescaping with the same failures as dataurl's ``Unescape``."""
    out = bytearray()
    i = 0
    raw = text.encode("utf-8")
    while i < len(raw):
        b = raw[i]
        if b != 0x25:  # '%'
            out.append(b)
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) < 2:
            raise DataURLError("rfc2396: unexpected end of unescape sequence")
        if not all(chr(c) in "0123456789abcdefABCDEF" for c in pair):
            seq = "%" + pair.decode("ascii", "replace")
            raise DataURLError(f"rfc2396: invalid unescape sequence {seq!r}")
        out.append(int(pair, 16))
        i += 3
    return bytes(out)


def _b64decode(text: str) -> bytes:
    """Standard base64 with padding, as Go's ``base64.StdEncoding`` requires."""
    if len(text) % 4 or "=" in text.rstrip("=") or len(text) - len(text.rstrip("=")) > 2:
        raise DataURLError("illegal base64 data")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise DataURLError("illegal base64 data") from None


def _skip_media_type(url: str, i: int) -> int:
    """Check ``type/subtype`` starting at *i*; return the index of the following ';' or ','."""
    n = len(url)
    x_token = url[i] in "xX" and url[i + 1 : i + 2] == "-"
    j = i
    while j < n and url[j] != "/":
        if not _is_token(url[j]):
            raise DataURLError("invalid character for media type")
        j += 1
    if j >= n:
        raise DataURLError("missing media type slash")
    if not x_token and not url[i:j].startswith(
        ("text", "image", "audio", "video", "application", "message", "multipart")
    ):
        raise DataURLError("invalid media type")
    j += 1
    while j < n and url[j] not in ";,":
        if not _is_token(url[j]):
            raise DataURLError("invalid character for media subtype")
        j += 1
    if j >= n:
        raise DataURLError("incomplete media type")
    return j


def _skip_param_value(url: str, i: int) -> int:
    """Check a parameter value starting at *i*; return the index of the next ';' or ','."""
    n = len(url)
    if i >= n:
        raise DataURLError("missing comma before data")
    if url[i] == '"':
        j = i + 1
        while True:
            if j >= n:
                raise DataURLError("unclosed quoted string")
            if not url[j].isascii():
                raise DataURLError("invalid character for parameter value")
            if url[j] == "\\":
                j += 2
                continue
            if url[j] == '"':
                break
            j += 1
        j += 1
        if j >= n:
            raise DataURLError("missing comma before data")
        if url[j] not in ";,":
            raise DataURLError("expected semicolon or comma")
        return j
    if not _is_token(url[i]):
        raise DataURLError("invalid character for parameter value")
    j = i
    while j < n and url[j] not in ";,":
        if not _is_token(url[j]):
            raise DataURLError("invalid character for parameter value")
        j += 1
    if j >= n:
        raise DataURLError("missing comma before data")
    _unescape(url[i:j])
    return j


def decode(url: str) -> bytes:
    """Return the bytes of a data URL, or raise `DataURLError` where Ignition would fail."""
    if not url.startswith("data:"):
        raise DataURLError("missing data prefix")
    n = len(url)
    i = 5
    if i >= n:
        raise DataURLError("missing comma before data")
    if url[i] not in ";,":
        if not _is_token(url[i]):
            raise DataURLError("invalid character after data prefix")
        i = _skip_media_type(url, i)
    is_base64 = False
    while url[i] == ";":
        i += 1
        if i >= n or url[i] in "=,":
            raise DataURLError("unterminated parameter sequence")
        j = i
        while j < n and url[j] not in "=,":
            if not _is_token(url[j]):
                raise DataURLError("invalid character for parameter attribute")
            j += 1
        if j >= n:
            raise DataURLError("unterminated parameter sequence")
        if url[j] == ",":
            if url[i:j] != "base64":
                raise DataURLError(f"expected base64, got {url[i:j]}")
            is_base64 = True
            i = j
            break
        i = _skip_param_value(url, j + 1)
    data = url[i + 1 :]
    if is_base64:
        if not _BASE64_RE.fullmatch(data):
            raise DataURLError("invalid data character")
        return _b64decode(data)
    if not all(_is_url_char(ch) for ch in data):
        raise DataURLError("invalid data character")
    return _unescape(data)
