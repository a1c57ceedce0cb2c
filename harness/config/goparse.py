"""Go parsers Ignition relies on, re-implemented: ``path.Clean``, ``net/url``, go-systemd.

Ignition accepts or rejects paths, URLs and unit files through these Go libraries, whose
edge cases differ from Python's (``posixpath.normpath`` keeps a leading ``//``,
``urllib.parse`` accepts almost anything). Matching them keeps the harness's verdicts equal
to Ignition's.
"""

from __future__ import annotations

import re

_UNIT_LINE_MAX = 2048


def go_clean(path: str) -> str:
    """Go's ``path.Clean`` for absolute paths (unlike Python's, it folds a leading ``//``)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


# --- systemd unit files, parsed like go-systemd's lexer -------------------------------


def parse_unit(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """Return ``([(section, option name), ...], error)`` as Ignition's unit parser sees it.

    Text before the first section header is skipped, a section header must be alone on its
    line, an option needs ``=`` on its first line, and no line may reach 2048 bytes.
    """
    for line in re.split(r"[\r\n]", text):
        if len(line.encode("utf-8")) >= _UNIT_LINE_MAX:
            return [], f"line too long (max {_UNIT_LINE_MAX} bytes)"
    options: list[tuple[str, str]] = []
    section: str | None = None
    i, n = 0, len(text)

    def rest_of_line(start: int) -> tuple[str, int]:
        end = text.find("\n", start)
        end = n if end < 0 else end
        return text[start:end].rstrip("\r"), end + 1

    while i < n:
        ch = text[i]
        if ch in "#;":
            i += 1
            while True:  # a comment continues while its line ends in a backslash
                line, i = rest_of_line(i)
                if not line.rstrip(" ").endswith("\\") or i >= n:
                    break
            continue
        if ch == "[":
            end = text.find("]", i)
            if end < 0:
                return options, "unable to find end of section"
            section = text[i + 1 : end]
            garbage, i = rest_of_line(end + 1)
            if garbage.strip():
                return options, f"found garbage after section name {section}: {garbage.strip()!r}"
            continue
        if section is None or ch.isspace():
            i += 1
            continue
        eq = i
        while eq < n and text[eq] != "=":
            if text[eq] in "\r\n":
                return options, "unexpected newline encountered while parsing option name"
            eq += 1
        if eq >= n:
            return options, "EOF while parsing option name"
        options.append((section, text[i:eq].strip()))
        i = eq + 1
        while True:  # the value continues while a line ends in a backslash
            line, i = rest_of_line(i)
            if not line.strip() or not line.endswith("\\") or i > n:
                break
    return options, None


# --- URLs, parsed like Go's net/url (what Ignition does before looking at the scheme) --

_HOST_OK = set("!$&'()*+,;=:[]<>\"-_.~")
_USERINFO_OK = set("-._:~!$&'()*+,;=%@")


def _check_escapes(text: str, *, host: bool = False) -> None:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) < 2 or not all(c in "0123456789abcdefABCDEF" for c in pair):
                raise ValueError(f"invalid URL escape {text[i:i + 3]!r}")
            if host and int(pair[0], 16) < 8 and pair != "25":
                raise ValueError(f"invalid URL escape {text[i:i + 3]!r}")
            i += 3
            continue
        if host and ch.isascii() and not ch.isalnum() and ch not in _HOST_OK:
            raise ValueError(f"invalid character {ch!r} in host name")
        i += 1


def _valid_port(colon_port: str) -> bool:
    return re.fullmatch(r"(?::[0-9]*)?", colon_port) is not None


def _check_authority(authority: str) -> None:
    at = authority.rfind("@")
    host = authority[at + 1 :]
    if host.startswith("["):
        close = host.rfind("]")
        if close < 0:
            raise ValueError("missing ']' in host")
        if not _valid_port(host[close + 1 :]):
            raise ValueError("invalid port after host")
    elif ":" in host and not _valid_port(host[host.rfind(":") :]):
        raise ValueError("invalid port after host")
    _check_escapes(host, host=True)
    if at >= 0:
        userinfo = authority[:at]
        if not all(c.isascii() and c.isalnum() or c in _USERINFO_OK for c in userinfo):
            raise ValueError("invalid userinfo")
        _check_escapes(userinfo)


def parse_url(raw: str) -> tuple[str, str]:
    """Return ``(lower-cased scheme, query)`` or raise ValueError where ``url.Parse`` fails."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValueError("invalid control character in URL")
    raw, _, fragment = raw.partition("#")
    _check_escapes(fragment)
    scheme, rest = "", raw
    for i, ch in enumerate(raw):
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                break
            continue
        if ch == ":":
            if i == 0:
                raise ValueError("missing protocol scheme")
            scheme, rest = raw[:i].lower(), raw[i + 1 :]
        break
    query = ""
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return scheme, query  # opaque: Go checks nothing more
        if ":" in rest.split("/", 1)[0]:
            raise ValueError("first path segment in URL cannot contain colon")
    if (scheme or not rest.startswith("///")) and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        _check_authority(authority)
        rest = slash + path
    _check_escapes(rest)
    return scheme, query


