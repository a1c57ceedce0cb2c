"""The harness's Butane translation and Ignition validation agree with real Ignition.

Debian's ``ignition-validate`` (Ignition 2.14, the version the guests run) is the judge:
every spec <= 3.3 config rendered from tests/data/butane/ must pass it, every config in
tests/data/ignition-bad/ must fail both it and `validate_ignition` (at the same JSON
paths), and a set of unusual-but-valid configs must pass both. Nothing is skipped: without
``ignition-validate`` the tests fail and say how to install it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.config.butane import render_butane
from harness.config.ignition import GUEST_MAX_SPEC, add_ssh_key, to_json, validate_ignition
from harness.config.schema import version_tuple
from harness.run import run

DATA = Path(__file__).resolve().parents[1] / "data"
BUTANE = sorted((DATA / "butane").glob("*.bu"))
BAD = sorted((DATA / "ignition-bad").glob("*.json"))
HARNESS_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBv3qQqjv0x4lWm3hQ7mZb0yQd4bqJ8b1fC2d3e4f5g6"
               " harness")
SHA512_ABC = ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")


@pytest.fixture(scope="module")
def ignition_validate() -> str:
    path = shutil.which("ignition-validate")
    if path is None:
        pytest.fail("ignition-validate is not installed; run `make setup` (it installs "
                    "Debian's `ignition` package)")
    return path


def judge(tool: str, config: dict[str, Any], tmp_path: Path) -> tuple[int, str, set[str]]:
    """Run ignition-validate: exit code, output and the JSON paths of its errors."""
    path = tmp_path / "config.ign"
    path.write_text(to_json(config))
    proc = run([tool, path], check=False, timeout=60)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    paths = {re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", m)
             for m in re.findall(r"^error at (\$[^,]*), line", output, re.M)}
    return proc.returncode, output, paths


def harness_errors(config: dict[str, Any]) -> set[str]:
    return {p.path for p in validate_ignition(config) if p.severity == "error"}


def guest_spec(path: Path) -> bool:
    version = render_butane(path.read_text(), files_dir=DATA / "butane" / "files").spec_version
    return version_tuple(version) <= version_tuple(GUEST_MAX_SPEC)


GUEST_BUTANE = [p for p in BUTANE if guest_spec(p)]


def test_the_guest_inputs_cover_flatcar_1_0_and_fcos_1_4() -> None:
    names = {p.name.rsplit("-", 1)[0] for p in GUEST_BUTANE}
    assert {"flatcar-1.0", "fcos-1.4"} <= names


@pytest.mark.parametrize("path", GUEST_BUTANE, ids=lambda p: p.name)
def test_rendered_configs_are_accepted(ignition_validate: str, path: Path,
                                       tmp_path: Path) -> None:
    rendered = render_butane(path.read_text(), source=path, files_dir=DATA / "butane" / "files",
                             strict=True)
    # as the harness boots it: with its own login key merged in
    config = add_ssh_key(rendered.ignition, "core", HARNESS_KEY)
    code, output, _ = judge(ignition_validate, config, tmp_path)
    assert code == 0, output
    assert "error" not in output, output


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_configs_are_rejected_by_both(ignition_validate: str, path: Path,
                                          tmp_path: Path) -> None:
    config = json.loads(path.read_text())
    code, output, paths = judge(ignition_validate, config, tmp_path)
    assert code != 0, f"ignition-validate accepted {path.name}:\n{output}"
    ours = harness_errors(config)
    assert ours, f"validate_ignition accepted {path.name}"
    assert paths <= ours, f"ignition-validate: {sorted(paths)}, harness: {sorted(ours)}"


def _file(source: str, **contents: Any) -> dict[str, Any]:
    return {"path": "/etc/x", "contents": {"source": source, **contents}}


def _cfg(version: str = "3.3.0", **sections: Any) -> dict[str, Any]:
    return {"ignition": {"version": version}, **sections}


# Valid corner cases: a validator stricter than Ignition would refuse configs that work.
EDGE_VALID: dict[str, dict[str, Any]] = {
    "url-space-in-path": _cfg(storage={"files": [_file("http://example.com/a b")]}),
    "url-opaque": _cfg(storage={"files": [_file("http:example")]}),
    "url-uppercase-scheme": _cfg(storage={"files": [_file("HTTPS://example.com/x")]}),
    "url-ipv6-and-port": _cfg(storage={"files": [_file("http://[::1]:8080/x")]}),
    "url-userinfo": _cfg(storage={"files": [_file("https://u:p%20w@example.com/x")]}),
    "s3-version-id": _cfg(storage={"files": [_file("s3://bucket/obj?versionId=abc")]}),
    "tftp": _cfg(storage={"files": [_file("tftp://host/file")]}),
    "gs-in-3.2": _cfg("3.2.0", storage={"files": [_file("gs://bucket/obj")]}),
    "data-url-marks": _cfg(storage={"files": [_file("data:,a+b'()*!~-_.;/?:@&=$,%41")]}),
    "data-url-parameters": _cfg(storage={"files": [
        _file("data:text/plain;charset=utf-8;base64,aGk=")]}),
    "data-url-quoted-parameter": _cfg(storage={"files": [_file('data:text/plain;n="a b",x')]}),
    "data-url-empty": _cfg(storage={"files": [_file("data:,")]}),
    "data-url-x-type": _cfg(storage={"files": [_file("data:x-foo/bar,x")]}),
    "empty-source": _cfg(storage={"files": [_file("")]}),
    "hash-uppercase-hex": _cfg(storage={"files": [_file(
        "https://e.com/x", verification={"hash": "sha512-" + SHA512_ABC.upper()})]}),
    "hash-matching-data-url": _cfg(storage={"files": [_file(
        "data:,abc", verification={"hash": "sha512-" + SHA512_ABC})]}),
    "gzip-and-headers": _cfg(storage={"files": [_file(
        "https://e.com/x.gz", compression="gzip", httpHeaders=[{"name": "A"}])]}),
    "mode-zero": _cfg(storage={"files": [{"path": "/etc/x", "mode": 0}]}),
    "directory-overwrite": _cfg(storage={"directories": [{"path": "/d", "overwrite": True}]}),
    "relative-link-overwrite": _cfg(storage={"links": [
        {"path": "/l", "target": "../x", "overwrite": True}]}),
    "hard-link-to-file": _cfg(storage={"files": [{"path": "/a"}],
                                       "links": [{"path": "/b", "target": "/a", "hard": True}]}),
    "sibling-of-link": _cfg(storage={"links": [{"path": "/opt/l", "target": "/x"}],
                                     "files": [{"path": "/opt/lx"}]}),
    "dots-in-names": _cfg(storage={"files": [{"path": "/etc/a..b"}, {"path": "/etc/.hidden"}]}),
    "unit-templates": _cfg(systemd={"units": [{"name": "a@.service"}, {"name": "a@b.service"},
                                              {"name": "x.snapshot"}]}),
    "unit-enabled-without-contents": _cfg(systemd={"units": [
        {"name": "a.service", "enabled": True}]}),
    "unit-text-before-section": _cfg(systemd={"units": [
        {"name": "a.service", "contents": "junk line\n[Unit]\nA=b\n"}]}),
    "unit-continuations-comments-crlf": _cfg(systemd={"units": [{
        "name": "a.service",
        "contents": "# c \\\n still comment\r\n[Service]\r\nExecStart=/bin/echo a \\\n b\r\n"
                    "; x\r\n  Indented = yes\r\n\r\n[Install]\r\nWantedBy=x\r\n"}]}),
    "unit-empty-value": _cfg(systemd={"units": [
        {"name": "a.service", "contents": "[Service]\nExecStart=\n"}]}),
    "dropin-comments-only": _cfg(systemd={"units": [
        {"name": "a.service", "dropins": [{"name": "a.conf", "contents": "# nothing\n"}]}]}),
    "kernel-argument-empty": _cfg(kernelArguments={"shouldExist": [""]}),
    "proxies": _cfg(ignition={"version": "3.3.0", "proxy": {
        "httpProxy": "http://p:3128", "httpsProxy": "https://p:3128", "noProxy": ["a", "b"]}}),
    "filesystem-none": _cfg(storage={"filesystems": [{"device": "/dev/vdb", "format": "none"}]}),
    "raid-level-number": _cfg(storage={"raid": [
        {"name": "md", "level": "1", "devices": ["/dev/a", "/dev/b"]}]}),
    "luks-tpm2": _cfg(storage={"luks": [
        {"name": "d", "device": "/dev/vdb", "clevis": {"tpm2": True}}]}),
    "null-fields": _cfg(storage={"files": [{"path": "/etc/x", "mode": None, "contents": None}]}),
    "replace-empty": _cfg(ignition={"version": "3.3.0", "config": {"replace": {}}}),
    "merge-data-url": _cfg(ignition={"version": "3.3.0", "config": {
        "merge": [{"source": "data:,%7B%7D"}]}}),
    "users-without-keys": _cfg(passwd={"users": [{"name": "a"},
                                                 {"name": "b", "sshAuthorizedKeys": []}]}),
    "spec-3.0": _cfg("3.0.0", storage={"files": [_file(
        "https://e.com/x", verification={"hash": "sha512-" + SHA512_ABC})]}),
}


@pytest.mark.parametrize("name", sorted(EDGE_VALID))
def test_unusual_valid_configs_are_accepted_by_both(ignition_validate: str, name: str,
                                                    tmp_path: Path) -> None:
    config = EDGE_VALID[name]
    code, output, _ = judge(ignition_validate, config, tmp_path)
    assert code == 0, output
    assert harness_errors(config) == set()


def test_newer_specs_are_beyond_the_guests(ignition_validate: str, tmp_path: Path) -> None:
    """Why only flatcar 1.0 and fcos <= 1.4 can be applied for real: 2.14 stops at 3.3."""
    code, output, _ = judge(ignition_validate, _cfg("3.4.0"), tmp_path)
    assert code != 0 and "unsupported config version" in output
    assert GUEST_MAX_SPEC == "3.3.0"
    assert harness_errors(_cfg("3.4.0")) == set()  # the harness still validates them
