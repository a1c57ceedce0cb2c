"""Ignition validation as Ignition does it, plus the JSON helpers the harness builds on.

The corpus in tests/data/ignition-bad/ is also run through Debian's real
``ignition-validate`` by tests/integration/test_ignition_agreement.py; here each file
must produce the error Ignition reports, at the same JSON path.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from harness.config import dataurl
from harness.config.goparse import go_clean, parse_unit, parse_url
from harness.config.ignition import (
    GUEST_MAX_SPEC,
    SPEC_VERSIONS,
    Problem,
    add_ssh_key,
    spec_version,
    to_json,
    validate_ignition,
)
from harness.errors import ConfigError

BAD_DIR = Path(__file__).resolve().parents[1] / "data" / "ignition-bad"
SHA512_EMPTY = hashlib.sha512(b"").hexdigest()

# file -> (JSON path, message) of an error the harness must report, as Ignition 2.14 does.
BAD: dict[str, tuple[str, str]] = {
    "append-bad-scheme": ("$.storage.files[0].append[0].source", "invalid url scheme"),
    "ca-without-source": ("$.ignition.security.tls.certificateAuthorities[0]",
                          "source is required"),
    "clevis-custom-with-tpm2": ("$.storage.luks[0].clevis", "cannot use custom clevis config"),
    "compression-bzip2": ("$.storage.files[0].contents.compression",
                          "invalid compression method"),
    "data-url-bad-base64-padding": ("$.storage.files[0].contents.source", "illegal base64 data"),
    "data-url-bad-escape": ("$.storage.files[0].contents.source", "rfc2396"),
    "data-url-bad-media-type": ("$.storage.files[0].contents.source", "invalid media type"),
    "data-url-bad-parameter": ("$.storage.files[0].contents.source", "expected base64, got x"),
    "data-url-base64-bad-character": ("$.storage.files[0].contents.source",
                                      "invalid data character"),
    "data-url-fragment": ("$.storage.files[0].contents.source", "invalid data character"),
    "data-url-media-type-without-slash": ("$.storage.files[0].contents.source",
                                          "invalid character for media type"),
    "data-url-no-comma": ("$.storage.files[0].contents.source", "incomplete media type"),
    "data-url-quote": ("$.storage.files[0].contents.source", "invalid data character"),
    "data-url-short-escape": ("$.storage.files[0].contents.source",
                              "unexpected end of unescape sequence"),
    "data-url-space": ("$.storage.files[0].contents.source", "invalid data character"),
    "data-url-uppercase-prefix": ("$.storage.files[0].contents.source", "missing data prefix"),
    "directory-illegal-mode": ("$.storage.directories[0].mode", "illegal file mode"),
    "directory-relative-path": ("$.storage.directories[0].path", "path not absolute"),
    "directory-under-link": ("$.storage.directories[0]",
                             "directory path includes link in config"),
    "disk-without-device": ("$.storage.disks[0].device", "disk device is required"),
    "double-slash-path": ("$.storage.files[0].path", "path is not fully simplified"),
    "dropin-unterminated-section": ("$.systemd.units[0].dropins[0].contents",
                                    "unable to find end of section"),
    "dropin-without-conf": ("$.systemd.units[0].dropins[0].name",
                            "invalid systemd drop-in extension"),
    "dropins-duplicate": ("$.systemd.units[0].dropins[1]", "duplicate entry defined"),
    "duplicate-file-and-directory": ("$.storage.files[0]", "duplicate entry defined"),
    "duplicate-files": ("$.storage.files[1]", "duplicate entry defined"),
    "duplicate-link-and-file": ("$.storage.links[0]", "duplicate entry defined"),
    "enabled-not-a-boolean": ("$.systemd.units[0].enabled", "expected boolean, got string"),
    "file-under-link": ("$.storage.files[0]", "file path includes link in config"),
    "filesystem-ext4-label-too-long": ("$.storage.filesystems[0].label",
                                       "cannot be longer than 16 characters"),
    "filesystem-label-without-format": ("$.storage.filesystems[0].label",
                                        "must specify format if label is specified"),
    "filesystem-none-in-3.2": ("$.storage.filesystems[0].format", "invalid filesystem format"),
    "filesystem-relative-device": ("$.storage.filesystems[0].device", "path not absolute"),
    "filesystem-relative-path": ("$.storage.filesystems[0].path", "path not absolute"),
    "filesystem-unknown-format": ("$.storage.filesystems[0].format",
                                  "invalid filesystem format"),
    "filesystems-duplicate-device": ("$.storage.filesystems[1]", "duplicate entry defined"),
    "groups-duplicate": ("$.passwd.groups[1]", "duplicate entry defined"),
    "hard-link-to-directory": ("$.storage.links[0]", "hard link target is a directory"),
    "hash-empty": ("$.storage.files[0].contents.verification.hash", "malformed hash specifier"),
    "hash-md5": ("$.storage.files[0].contents.verification.hash", "unrecognized hash function"),
    "hash-no-dash": ("$.storage.files[0].contents.verification.hash",
                     "malformed hash specifier"),
    "hash-sha256-in-3.0": ("$.storage.files[0].contents.verification.hash",
                           "unrecognized hash function"),
    "hash-sha512-short": ("$.storage.files[0].contents.verification.hash",
                          "incorrect size for hash sum"),
    "hash-uppercase-function": ("$.storage.files[0].contents.verification.hash",
                                "unrecognized hash function"),
    "hash-without-source": ("$.storage.files[0].contents.verification.hash",
                            "source must be specified if verification is specified"),
    "hash-wrong-size": ("$.storage.files[0].contents.verification.hash",
                        "incorrect size for hash sum"),
    "http-header-empty-name": ("$.storage.files[0].contents.httpHeaders[0].name",
                               "HTTP header name can't be empty"),
    "http-headers-duplicate": ("$.storage.files[0].contents.httpHeaders[1]",
                               "duplicate entry defined"),
    "http-headers-with-data-url": ("$.storage.files[0].contents.httpHeaders",
                                   "cannot use HTTP headers with this source scheme"),
    "http-headers-with-s3": ("$.storage.files[0].contents.httpHeaders",
                             "cannot use HTTP headers with this source scheme"),
    "illegal-mode": ("$.storage.files[0].mode", "illegal file mode"),
    "kernel-argument-duplicate": ("$.kernelArguments.shouldExist[1]", "duplicate entry defined"),
    "kernel-argument-exists-and-not": ("$.kernelArguments.shouldNotExist[0]",
                                       "duplicate entry defined"),
    "link-empty-target": ("$.storage.links[0].target", "link target is required"),
    "link-under-link": ("$.storage.links[1]", "link path includes link in config"),
    "link-without-target": ("$.storage.links[0].target", "link target is required"),
    "luks-duplicate-name": ("$.storage.luks[1]", "duplicate entry defined"),
    "luks-relative-device": ("$.storage.luks[0].device", "path not absolute"),
    "merge-duplicate-source": ("$.ignition.config.merge[1]", "duplicate entry defined"),
    "merge-without-source": ("$.ignition.config.merge[0]", "source is required"),
    "missing-path": ("$.storage.files[0].path", "path not specified"),
    "mode-as-string": ("$.storage.files[0].mode", "expected integer, got string"),
    "negative-mode": ("$.storage.files[0].mode", "illegal file mode"),
    "no-proxy-duplicate": ("$.ignition.proxy.noProxy[1]", "duplicate entry defined"),
    "overwrite-without-source": ("$.storage.files[0].overwrite",
                                 "overwrite must be false if source is unspecified"),
    "owner-id-and-name": ("$.storage.files[0].user", "cannot set both id and name"),
    "partition-numbers-collide": ("$.storage.disks[0].partitions[1]",
                                  "partition numbers collide"),
    "path-not-a-string": ("$.storage.files[0].path", "expected string, got integer"),
    "proxy-not-http": ("$.ignition.proxy.httpProxy", "proxies must be http(s)"),
    "raid-unknown-level": ("$.storage.raid[0].level", "unrecognized raid level"),
    "raid-without-devices": ("$.storage.raid[0].devices", "raid devices required"),
    "relative-path": ("$.storage.files[0].path", "path not absolute"),
    "s3-empty-version-id": ("$.storage.files[0].contents.source", "invalid S3 object VersionId"),
    "scheme-arn-before-3.4": ("$.storage.files[0].contents.source", "invalid url scheme"),
    "scheme-file": ("$.storage.files[0].contents.source", "invalid url scheme"),
    "scheme-ftp": ("$.storage.files[0].contents.source", "invalid url scheme"),
    "scheme-gs-in-3.1": ("$.storage.files[0].contents.source", "invalid url scheme"),
    "scheme-missing": ("$.storage.files[0].contents.source", "invalid url scheme"),
    "ssh-keys-duplicate": ("$.passwd.users[0].sshAuthorizedKeys[1]", "duplicate entry defined"),
    "storage-not-an-object": ("$.storage", "expected object, got list"),
    "trailing-slash-path": ("$.storage.files[0].path", "path is not fully simplified"),
    "uid-not-an-integer": ("$.passwd.users[0].uid", "expected integer, got number"),
    "unclean-path": ("$.storage.files[0].path", "path is not fully simplified"),
    "unit-garbage-after-section": ("$.systemd.units[0].contents",
                                   "found garbage after section name"),
    "unit-line-too-long": ("$.systemd.units[0].contents", "line too long (max 2048 bytes)"),
    "unit-missing-name": ("$.systemd.units[0].name", "invalid systemd unit extension"),
    "unit-network-extension": ("$.systemd.units[0].name", "invalid systemd unit extension"),
    "unit-option-at-end-without-equals": ("$.systemd.units[0].contents",
                                          "invalid unit content"),
    "unit-option-without-equals": ("$.systemd.units[0].contents",
                                   "unexpected newline encountered while parsing option name"),
    "unit-unknown-extension": ("$.systemd.units[0].name", "invalid systemd unit extension"),
    "unit-unterminated-section": ("$.systemd.units[0].contents",
                                  "unable to find end of section"),
    "unit-uppercase-extension": ("$.systemd.units[0].name", "invalid systemd unit extension"),
    "unit-without-extension": ("$.systemd.units[0].name", "invalid systemd unit extension"),
    "units-duplicate": ("$.systemd.units[1]", "duplicate entry defined"),
    "url-bad-escape": ("$.storage.files[0].contents.source", "unable to parse url"),
    "url-bad-port": ("$.storage.files[0].contents.source", "unable to parse url"),
    "url-control-character": ("$.storage.files[0].contents.source", "unable to parse url"),
    "url-space-in-host": ("$.storage.files[0].contents.source", "unable to parse url"),
    "user-groups-duplicate": ("$.passwd.users[0].groups[1]", "duplicate entry defined"),
    "users-duplicate": ("$.passwd.users[1]", "duplicate entry defined"),
    "version-experimental": ("$.ignition.version", "unsupported config version"),
    "version-missing": ("$.ignition.version", "invalid config version (couldn't parse)"),
    "version-spec-2": ("$.ignition.version", "unsupported config version"),
    "version-two-parts": ("$.ignition.version", "invalid config version (couldn't parse)"),
    "version-unsupported": ("$.ignition.version", "unsupported config version"),
}


def cfg(version: str = "3.3.0", **sections: Any) -> dict[str, Any]:
    return {"ignition": {"version": version}, **sections}


def file_with(**contents: Any) -> dict[str, Any]:
    return cfg(storage={"files": [{"path": "/etc/x", "contents": contents}]})


def errors(config: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate_ignition(config) if p.severity == "error"]


def warnings(config: Any) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate_ignition(config) if p.severity == "warning"]


# --- the corpus ------------------------------------------------------------------------


def test_corpus_and_expectations_list_the_same_files() -> None:
    assert {p.stem for p in BAD_DIR.glob("*.json")} == set(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_is_rejected_where_ignition_rejects_it(name: str) -> None:
    config = json.loads((BAD_DIR / f"{name}.json").read_text())
    path, message = BAD[name]
    found = errors(config)
    assert any(p == path and message in m for p, m in found), found


# --- rules not covered by the corpus ---------------------------------------------------


def test_a_plain_config_is_valid() -> None:
    config = cfg(storage={"files": [{"path": "/etc/motd", "mode": 0o644,
                                     "contents": {"source": "data:,hi", "compression": ""}}]},
                 systemd={"units": [{"name": "a.service", "enabled": True,
                                     "contents": "[Service]\nExecStart=/bin/true\n"
                                                 "[Install]\nWantedBy=multi-user.target\n"}]})
    assert validate_ignition(config) == []


@pytest.mark.parametrize("version", SPEC_VERSIONS)
def test_every_supported_version_validates(version: str) -> None:
    assert validate_ignition(cfg(version)) == []


def test_not_an_object() -> None:
    assert errors([]) == [("$", "config must be a JSON object, got list")]


def test_unknown_keys_warn_with_their_path() -> None:
    config = cfg(storage={"files": [{"path": "/x", "bogus": 1}]}, extra=True)
    assert warnings(config) == [("$.storage.files[0].bogus", "unused key bogus"),
                                ("$.extra", "unused key extra")]
    assert errors(config) == []


def test_keys_newer_than_the_spec_warn_and_say_which_spec_has_them() -> None:
    config = cfg("3.2.0", kernelArguments={"shouldExist": ["quiet"]})
    assert warnings(config) == [("$.kernelArguments",
                                 "unused key kernelArguments (needs spec 3.3.0 or newer)")]
    assert warnings(cfg("3.1.0", storage={"luks": []}))[0][0] == "$.storage.luks"
    assert errors(cfg("3.3.0", kernelArguments={"shouldExist": ["quiet"]})) == []


@pytest.mark.parametrize(("version", "url", "ok"), [
    ("3.1.0", "gs://bucket/object", False),
    ("3.2.0", "gs://bucket/object", True),
    ("3.3.0", "arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/key", False),
    ("3.4.0", "arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/key", True),
    ("3.4.0", "arn:aws:s3:us-east-1:123456789012:accesspoint/ap", False),
    ("3.4.0", "arn:aws:sqs:us-east-1:123456789012:queue/x", False),
    ("3.3.0", "s3://bucket/object?versionId=abc", True),
    ("3.3.0", "HTTPS://example.com/x", True),
    ("3.3.0", "http://example.com/with space", True),
    ("3.3.0", "http://[::1]:8080/x", True),
    ("3.3.0", "http://[::1/x", False),
])
def test_url_schemes_follow_the_spec_version(version: str, url: str, ok: bool) -> None:
    config = cfg(version, storage={"files": [{"path": "/x", "contents": {"source": url}}]})
    assert (errors(config) == []) is ok, errors(config)


def test_sha256_needs_spec_3_1() -> None:
    digest = "sha256-" + hashlib.sha256(b"").hexdigest()
    source = {"source": "https://e.com/x", "verification": {"hash": digest}}
    assert errors(cfg("3.0.0", storage={"files": [{"path": "/x", "contents": source}]}))
    assert not errors(cfg("3.1.0", storage={"files": [{"path": "/x", "contents": source}]}))


def test_filesystem_format_none_needs_spec_3_3() -> None:
    fs = {"filesystems": [{"device": "/dev/vdb", "format": "none"}]}
    assert errors(cfg("3.2.0", storage=fs))
    assert not errors(cfg("3.3.0", storage=fs))


def test_special_mode_bits_warn_before_spec_3_6() -> None:
    config = cfg(storage={"files": [{"path": "/usr/bin/tool", "mode": 0o4755}]})
    assert warnings(config) == [("$.storage.files[0].mode", "setuid/setgid/sticky bits are not "
                                 "supported in spec versions older than 3.6.0")]
    assert errors(config) == []


def test_enabled_unit_without_install_section_warns() -> None:
    config = cfg(systemd={"units": [{"name": "a.service", "enabled": True,
                                     "contents": "[Service]\nExecStart=/bin/true\n"}]})
    assert warnings(config) == [("$.systemd.units[0].contents", 'unit "a.service" is enabled, '
                                 "but has no install section so enable does nothing")]


def test_hard_link_owner_warns() -> None:
    config = cfg(storage={"links": [{"path": "/b", "target": "/a", "hard": True,
                                     "user": {"id": 0}}]})
    assert warnings(config) == [("$.storage.links[0].user",
                                 "user and group are ignored for hard links")]


def test_plain_http_proxy_for_https_warns() -> None:
    config = cfg(ignition={"version": "3.3.0", "proxy": {"httpsProxy": "http://proxy:3128"}})
    assert warnings(config) == [("$.ignition.proxy.httpsProxy",
                                 "insecure plaintext HTTP proxy specified for HTTPS resources")]


def test_file_colliding_with_a_unit_is_an_error() -> None:
    # Ignition 2.14 accepts this, newer releases do not; the guest would get one or the other.
    config = cfg(storage={"files": [{"path": "/etc/systemd/system/a.service"},
                                    {"path": "/etc/systemd/system/a.service.d/x.conf"}]},
                 systemd={"units": [{"name": "a.service", "contents": "[Unit]\n",
                                     "dropins": [{"name": "x.conf", "contents": "[Unit]\n"}]}]})
    assert errors(config) == [
        ("$.storage.files[0].path", "path conflicts with systemd unit or dropin"),
        ("$.storage.files[1].path", "path conflicts with systemd unit or dropin"),
    ]


def test_data_url_contents_must_match_their_hash() -> None:
    good = "sha512-" + hashlib.sha512(b"hi").hexdigest()
    assert not errors(file_with(source="data:,hi", verification={"hash": good}))
    found = errors(file_with(source="data:,ho", verification={"hash": good}))
    assert found[0][0] == "$.storage.files[0].contents.verification.hash"
    assert "hash verification failed" in found[0][1]


def test_hash_of_compressed_data_url_covers_the_decompressed_bytes() -> None:
    packed = base64.b64encode(gzip.compress(b"hello")).decode()
    digest = "sha256-" + hashlib.sha256(b"hello").hexdigest()
    config = file_with(source="data:;base64," + packed, compression="gzip",
                       verification={"hash": digest})
    assert errors(config) == []


def test_gzip_compression_needs_gzip_data() -> None:
    assert errors(file_with(source="data:,plain", compression="gzip")) == [
        ("$.storage.files[0].contents.source",
         "contents are not gzip data (compression: gzip)")]


def test_hash_sum_must_be_hexadecimal() -> None:
    bad = "sha512-" + "z" * 128
    assert errors(file_with(source="https://e.com/x", verification={"hash": bad})) == [
        ("$.storage.files[0].contents.verification.hash", "hash sum is not hexadecimal")]


def test_type_errors_do_not_repeat_as_missing_fields() -> None:
    assert errors(cfg(storage={"files": [{"path": ["/x"]}]})) == [
        ("$.storage.files[0].path", "expected string, got list")]


def _replacements(value: Any, path: tuple[Any, ...] = ()) -> Any:
    """Every (path, wrong value) pair for every node of *value*."""
    for wrong in ([], {}, 1, -1, "x", None, True, 1.5, [None], [1], ["x"]):
        yield path, wrong
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _replacements(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _replacements(item, (*path, i))


def test_wrong_types_anywhere_never_crash_the_validator() -> None:
    sample = cfg(
        ignition={"version": "3.3.0", "config": {"merge": [{"source": "data:,{}"}]},
                  "proxy": {"httpsProxy": "https://p", "noProxy": ["a"]},
                  "security": {"tls": {"certificateAuthorities": [{"source": "data:,x"}]}}},
        storage={"files": [{"path": "/f", "mode": 420, "user": {"id": 1},
                            "contents": {"source": "data:,x", "compression": "",
                                         "httpHeaders": [{"name": "a", "value": "b"}],
                                         "verification": {"hash": "sha512-" + SHA512_EMPTY}},
                            "append": [{"source": "data:,y"}]}],
                 "directories": [{"path": "/d", "mode": 493}],
                 "links": [{"path": "/l", "target": "/f", "hard": True}],
                 "disks": [{"device": "/dev/a", "partitions": [{"number": 1}]}],
                 "raid": [{"name": "md", "level": "1", "devices": ["/dev/b"]}],
                 "filesystems": [{"device": "/dev/c", "format": "ext4", "label": "l"}],
                 "luks": [{"name": "x", "device": "/dev/d", "keyFile": {"source": "data:,k"},
                           "clevis": {"tpm2": True, "custom": {"pin": "p"}}}]},
        systemd={"units": [{"name": "a.service", "enabled": True, "contents": "[Unit]\n",
                            "dropins": [{"name": "a.conf", "contents": "[Unit]\n"}]}]},
        passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k"], "groups": ["g"]}],
                "groups": [{"name": "g"}]},
        kernelArguments={"shouldExist": ["a"], "shouldNotExist": ["b"]},
    )
    for path, wrong in _replacements(sample):
        if not path:
            continue
        config = json.loads(json.dumps(sample))
        node = config
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = wrong
        validate_ignition(config)  # must not raise


def test_problem_renders_path_and_line() -> None:
    assert str(Problem("$.a", "bad")) == "error at $.a: bad"
    assert str(Problem("a", "odd", "warning", 3)) == "warning at a (line 3): odd"


# --- parsers Ignition relies on ---------------------------------------------------------


@pytest.mark.parametrize(("path", "clean"), [
    ("/", "/"), ("//a", "/a"), ("/a/", "/a"), ("/a/./b", "/a/b"), ("/a/../b", "/b"),
    ("/../a", "/a"), ("/a..b", "/a..b"),
])
def test_go_clean(path: str, clean: str) -> None:
    assert go_clean(path) == clean


@pytest.mark.parametrize("url", ["http://a b/", "http://x:port/", ":x", "1http://x",
                                 "http://x/%zz", "http://[::1", "http://a@b@c/\x7f"])
def test_parse_url_rejects_what_go_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_parse_url_returns_scheme_and_query() -> None:
    assert parse_url("S3://bucket/key?versionId=1") == ("s3", "versionId=1")
    assert parse_url("data:,a b") == ("data", "")
    assert parse_url("") == ("", "")


def test_parse_unit_sections_and_options() -> None:
    text = "junk\n[Unit]\nDescription=x \\\n  continued\n# c\n[Install]\nWantedBy=a\n"
    assert parse_unit(text) == ([("Unit", "Description"), ("Install", "WantedBy")], None)
    assert parse_unit("[Unit]\nA=b\r\n")[1] is None
    assert parse_unit("[Install]\n") == ([], None)


# --- data URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["data:,", "data:,a%20b", "data:text/plain;charset=utf-8,x",
                                 "data:;base64,aGk=", 'data:text/plain;a="b c",x',
                                 "data:x-custom/type,x"])
def test_decode_accepts_what_ignition_accepts(url: str) -> None:
    dataurl.decode(url)


def test_decode_returns_bytes() -> None:
    assert dataurl.decode("data:,a%20b%FF") == b"a b\xff"
    assert dataurl.decode("data:;base64,aGk=") == b"hi"


# --- helpers -----------------------------------------------------------------------------


def test_spec_version() -> None:
    assert spec_version(cfg("3.2.0")) == "3.2.0"
    with pytest.raises(ConfigError, match="no version"):
        spec_version({"ignition": {}})


def test_guest_spec_is_supported() -> None:
    assert GUEST_MAX_SPEC in SPEC_VERSIONS


def test_add_ssh_key_creates_the_user() -> None:
    original = cfg()
    new = add_ssh_key(original, "core", "ssh-ed25519 AAAA harness\n")
    assert new["passwd"]["users"] == [{"name": "core",
                                       "sshAuthorizedKeys": ["ssh-ed25519 AAAA harness"]}]
    assert original == cfg()  # the input is not modified


def test_add_ssh_key_keeps_everything_else() -> None:
    original = cfg(passwd={"users": [
        {"name": "other", "sshAuthorizedKeys": ["k1"]},
        {"name": "core", "uid": 500, "groups": ["wheel"], "sshAuthorizedKeys": ["k2"]},
    ], "groups": [{"name": "g"}]}, storage={"files": [{"path": "/x"}]})
    new = add_ssh_key(original, "core", "k3")
    assert new["passwd"]["users"][0] == {"name": "other", "sshAuthorizedKeys": ["k1"]}
    assert new["passwd"]["users"][1] == {"name": "core", "uid": 500, "groups": ["wheel"],
                                         "sshAuthorizedKeys": ["k2", "k3"]}
    assert new["passwd"]["groups"] == [{"name": "g"}]
    assert new["storage"] == original["storage"]
    assert add_ssh_key(new, "core", "k3") == new  # no duplicate (Ignition rejects those)
    assert errors(new) == []


def test_add_ssh_key_refuses_bad_keys() -> None:
    with pytest.raises(ValueError):
        add_ssh_key(cfg(), "core", "")
    with pytest.raises(ValueError):
        add_ssh_key(cfg(), "core", "k1\nk2")


def test_to_json_is_canonical() -> None:
    text = to_json({"b": 1, "a": {"d": [1], "c": "é"}})
    assert text == ('{\n  "a": {\n    "c": "\\u00e9",\n    "d": [\n      1\n    ]\n  },\n'
                    '  "b": 1\n}\n')
    assert json.loads(text) == {"b": 1, "a": {"d": [1], "c": "é"}}
