"""Building extension artifacts with the real mksquashfs / mkfs.erofs, inspected with the
real unsquashfs / fsck.erofs / dump.erofs. No VMs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import harness.extensions.build as build_mod
from harness.errors import CommandError, ConfigError, HarnessError
from harness.extensions import (
    RELAXED_XATTR,
    Artifact,
    ExtensionSpec,
    build_extension,
    default_cache_dir,
    parse_extension_spec,
)

HOST = {"ID": "debian", "VERSION_ID": "12", "SYSEXT_LEVEL": "1.0", "NAME": "Debian GNU/Linux"}
RELEASE_PATH = "usr/lib/extension-release.d/extension-release.hello"

needs_squashfs = pytest.mark.skipif(
    not (shutil.which("mksquashfs") and shutil.which("unsquashfs")),
    reason="squashfs-tools not installed (make setup)",
)
needs_erofs = pytest.mark.skipif(
    not (shutil.which("mkfs.erofs") and shutil.which("fsck.erofs")),
    reason="erofs-utils not installed (make setup)",
)


def spec_of(data: dict[str, object], name: str = "hello") -> ExtensionSpec:
    return parse_extension_spec(name, data, source="t.yaml", key_prefix=f"extensions.{name}")


HELLO = {
    "release": {
        "ID": "host",
        "VERSION_ID": "host",
        "SYSEXT_LEVEL": "host",
        "ARCHITECTURE": "host",
        "NAME": "host",
    },
    "relaxed_release_name": True,
    "files": [
        {"path": "/usr/bin/hello", "content": "#!/bin/sh\necho hello\n", "mode": "0755"},
        {"path": "/usr/lib/hello/link", "symlink": "../../bin/hello"},
        {"path": "/usr/share/hello/empty", "directory": True, "mode": "0700"},
        {"path": "/usr/share/hello/secret", "content": "s", "mode": "0600"},
        {"path": "/usr/share/hello/ro", "directory": True, "mode": "0555"},
        {"path": "/usr/share/hello/ro/inside", "content": "x"},
    ],
    "units": {"hello.service": "[Service]\nExecStart=/usr/bin/hello\n"},
}
EXPECTED_RELEASE = (
    'ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nNAME="Debian GNU/Linux"\n'
)


def build(data: dict[str, object], tmp_path: Path, fmt: str, **kw: object) -> Artifact:
    spec = dataclasses.replace(spec_of(data), format=fmt)
    return build_extension(spec, HOST, cache_dir=tmp_path / "cache", **kw)  # type: ignore[arg-type]


def sh(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def check_tree(root: Path) -> None:
    """Everything HELLO asks for, checked on an extracted or directory tree."""

    def mode(rel: str) -> int:
        return stat.S_IMODE((root / rel).lstat().st_mode)

    assert (root / "usr/bin/hello").read_text() == "#!/bin/sh\necho hello\n"
    assert mode("usr/bin/hello") == 0o755
    assert os.readlink(root / "usr/lib/hello/link") == "../../bin/hello"
    assert mode("usr/share/hello/empty") == 0o700
    assert mode("usr/share/hello/secret") == 0o600
    assert mode("usr/share/hello/ro") == 0o555
    assert mode("usr/share/hello/ro/inside") == 0o644
    assert mode("usr") == 0o755 and mode("usr/lib/extension-release.d") == 0o755
    assert (root / RELEASE_PATH).read_text() == EXPECTED_RELEASE
    assert mode(RELEASE_PATH) == 0o644
    unit = root / "usr/lib/systemd/system/hello.service"
    assert unit.read_text() == "[Service]\nExecStart=/usr/bin/hello\n"


# --------------------------------------------------------------------------- formats


@needs_squashfs
def test_squashfs_build(tmp_path: Path) -> None:
    art = build(HELLO, tmp_path, "squashfs")
    assert art.format == "squashfs"
    assert art.filename == "hello.raw"
    assert art.path == tmp_path / "cache" / "extensions" / art.digest / "hello.raw"
    assert sh("unsquashfs", "-cat", art.path, RELEASE_PATH) == EXPECTED_RELEASE

    listing = sh("unsquashfs", "-lls", art.path)
    lines = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
        if "squashfs-root" in line
    }
    assert lines["squashfs-root/usr/bin/hello"].startswith("-rwxr-xr-x root/root")
    assert lines["squashfs-root/usr/share/hello/empty"].startswith("drwx------ root/root")
    assert lines["squashfs-root/usr/lib/hello/link"].startswith("lrwxrwxrwx")
    assert lines["squashfs-root/usr/lib/hello/link"].endswith("-> ../../bin/hello")
    assert lines["squashfs-root"].startswith("drwxr-xr-x")

    out = tmp_path / "x"
    sh("unsquashfs", "-no-progress", "-d", out, art.path)
    check_tree(out)
    assert os.getxattr(out / RELEASE_PATH, RELAXED_XATTR) == b"0"
    # The build tree is gone; only the image is in the cache entry.
    assert sorted(p.name for p in art.path.parent.iterdir()) == ["hello.raw"]


@needs_squashfs
def test_squashfs_is_reproducible(tmp_path: Path) -> None:
    a = build(HELLO, tmp_path / "a", "squashfs")
    b = build(HELLO, tmp_path / "b", "squashfs")
    assert a.digest == b.digest
    assert a.path.read_bytes() == b.path.read_bytes()


@needs_erofs
def test_erofs_build(tmp_path: Path) -> None:
    art = build(HELLO, tmp_path, "erofs")
    assert art.format == "erofs" and art.filename == "hello.raw"
    assert art.path.read_bytes()[1024:1028] == bytes.fromhex("e2e1f5e0")  # erofs magic

    out = tmp_path / "x"
    sh("fsck.erofs", "--preserve-perms", f"--extract={out}", art.path)
    check_tree(out)

    # fsck.erofs 1.5 does not extract xattrs, so look at the inode and the raw bytes.
    info = sh("dump.erofs", f"--path=/{RELEASE_PATH}", art.path)
    assert "Uid: 0   Gid: 0" in info
    size = int(info.split("Xattr size:")[1].split()[0])
    assert size > 0
    assert b"extension-release.strict" in art.path.read_bytes()
    plain = build({**HELLO, "relaxed_release_name": False}, tmp_path, "erofs")
    assert b"extension-release.strict" not in plain.path.read_bytes()


def test_directory_build(tmp_path: Path) -> None:
    art = build(HELLO, tmp_path, "directory")
    assert art.format == "directory"
    assert art.filename == "hello" and art.path.is_dir()
    assert stat.S_IMODE(art.path.stat().st_mode) == 0o755
    check_tree(art.path)
    assert os.getxattr(art.path / RELEASE_PATH, RELAXED_XATTR) == b"0"


def test_no_release_file_and_release_name(tmp_path: Path) -> None:
    art = build(
        {"release": None, "files": [{"path": "/usr/a", "content": "a"}]}, tmp_path, "directory"
    )
    assert not (art.path / "usr/lib/extension-release.d").exists()

    art = build({"release": {"ID": "_any"}, "release_name": "other"}, tmp_path, "directory")
    rel = art.path / "usr/lib/extension-release.d"
    assert [p.name for p in rel.iterdir()] == ["extension-release.other"]
    assert (rel / "extension-release.other").read_text() == "ID=_any\n"
    with pytest.raises(OSError):
        os.getxattr(rel / "extension-release.other", RELAXED_XATTR)


def test_confext_layout(tmp_path: Path) -> None:
    art = build(
        {
            "type": "confext",
            "release": {"ID": "host", "CONFEXT_LEVEL": "7"},
            "files": [{"path": "/etc/hello.conf", "content": "x=1\n"}],
            "units": {"hello.service": "[Service]\n"},
        },
        tmp_path,
        "directory",
    )
    root = art.path
    assert (root / "etc/extension-release.d/extension-release.hello").read_text() == (
        "ID=debian\nCONFEXT_LEVEL=7\n"
    )
    assert (root / "etc/systemd/system/hello.service").read_text() == "[Service]\n"
    assert not (root / "usr").exists()


def test_default_release(tmp_path: Path) -> None:
    art = build({}, tmp_path, "directory")
    assert (art.path / RELEASE_PATH).read_text() == "ID=debian\nVERSION_ID=12\n"


def test_missing_host_key_is_config_error(tmp_path: Path) -> None:
    spec = spec_of({"release": {"ID": "host", "CONFEXT_LEVEL": "host"}})
    with pytest.raises(ConfigError) as info:
        build_extension(spec, HOST, cache_dir=tmp_path, target_label="refos-252-fcos")
    assert "refos-252-fcos" in str(info.value)
    assert not (tmp_path / "extensions").exists()


# --------------------------------------------------------------------------- caching


@needs_squashfs
def test_cache_hit_does_not_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build(HELLO, tmp_path, "squashfs")
    mtime = first.path.stat().st_mtime_ns

    def no_run(*_a: object, **_k: object) -> None:
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(build_mod, "run", no_run)
    second = build(HELLO, tmp_path, "squashfs")
    assert second == first
    assert second.path.stat().st_mtime_ns == mtime


def test_digest_depends_on_inputs(tmp_path: Path) -> None:
    base = build(HELLO, tmp_path, "directory").digest
    changed_content = {**HELLO, "files": [{"path": "/usr/bin/hello", "content": "other"}]}
    assert build(changed_content, tmp_path, "directory").digest != base
    # Same spec, different target os-release -> different artifact.
    spec = dataclasses.replace(spec_of(HELLO), format="directory")
    other_host = build_extension(spec, {**HOST, "VERSION_ID": "13"}, cache_dir=tmp_path)
    assert other_host.digest != base
    other_arch = build_extension(spec, HOST, architecture="arm64", cache_dir=tmp_path)
    assert other_arch.digest != base
    # Format and type matter, the source file does not.
    assert build(HELLO, tmp_path, "squashfs").digest != base
    moved = parse_extension_spec("hello", HELLO, source="elsewhere.yaml", key_prefix="x")
    moved = dataclasses.replace(moved, format="directory")
    assert build_extension(moved, HOST, cache_dir=tmp_path).digest == base


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(argv: list[object], **_k: object) -> None:
        raise CommandError(f"exit 1: {argv[0]}")

    monkeypatch.setattr(build_mod, "run", failing_run)
    monkeypatch.setattr(build_mod, "_help_text", lambda tool: "")
    monkeypatch.setattr(build_mod.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(CommandError):
        build(HELLO, tmp_path, "squashfs")
    assert list((tmp_path / "cache" / "extensions").iterdir()) == []


def test_missing_tool_says_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod.shutil, "which", lambda tool: None)
    for fmt in ("squashfs", "erofs"):
        with pytest.raises(HarnessError, match="make setup"):
            build(HELLO, tmp_path, fmt)


def test_stale_temp_dirs_are_cleaned(tmp_path: Path) -> None:
    ext = tmp_path / "cache" / "extensions"
    stale = ext / ".tmp-old"
    (stale / "tree").mkdir(parents=True)
    os.utime(stale, (0, 0))
    fresh = ext / ".tmp-new"
    fresh.mkdir()
    build(HELLO, tmp_path, "directory")
    assert not stale.exists()
    assert fresh.exists()


# --------------------------------------------------------------------------- prebuilt


def test_prebuilt_file_passes_through(tmp_path: Path) -> None:
    img = tmp_path / "my-ext.raw"
    img.write_bytes(b"not really squashfs")
    spec = parse_extension_spec(
        "mine", {"image": str(img)}, source=tmp_path / "s.yaml", key_prefix="extensions.mine"
    )
    art = build_extension(spec, HOST, cache_dir=tmp_path / "cache")
    assert art.path == img
    assert art.format == "prebuilt"
    assert art.filename == "my-ext.raw"
    assert art.name == "mine"
    assert art.digest == hashlib.sha256(b"not really squashfs").hexdigest()
    assert not (tmp_path / "cache").exists()


def test_prebuilt_directory_digest(tmp_path: Path) -> None:
    d = tmp_path / "mine"
    (d / "usr/lib/extension-release.d").mkdir(parents=True)
    (d / "usr/lib/extension-release.d/extension-release.mine").write_text("ID=_any\n")
    (d / "usr/x").symlink_to("lib")
    spec = parse_extension_spec(
        "mine", {"image": "mine"}, source=tmp_path / "s.yaml", key_prefix="extensions.mine"
    )
    first = build_extension(spec, HOST, cache_dir=tmp_path / "cache")
    assert first.path == d
    assert build_extension(spec, HOST, cache_dir=tmp_path / "cache").digest == first.digest
    (d / "usr/lib/extension-release.d/extension-release.mine").write_text("ID=debian\n")
    assert build_extension(spec, HOST, cache_dir=tmp_path / "cache").digest != first.digest


# --------------------------------------------------------------------------- cache dir


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYSEXT_HARNESS_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SYSEXT_HARNESS_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "sysext-harness"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sysext-harness"


@needs_erofs
def test_tamper_flips_one_byte_of_the_file_and_keeps_the_clean_build(tmp_path: Path) -> None:
    data = {"format": "erofs", "tamper": "/usr/share/blob",
            "files": [{"path": "/usr/share/blob", "content": "tamper-me ", "size": 8192}]}
    spec = parse_extension_spec("hello", data, source=None, key_prefix="extensions.hello")
    clean_spec = dataclasses.replace(spec, tamper=None)
    clean = build_extension(clean_spec, HOST, cache_dir=tmp_path)
    before = clean.path.read_bytes()
    bad = build_extension(spec, HOST, cache_dir=tmp_path)
    assert bad.path != clean.path and bad.digest != clean.digest
    assert clean.path.read_bytes() == before
    after = bad.path.read_bytes()
    diff = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(diff) == 1
    needle = ("tamper-me " * 820)[:8192].encode()
    assert diff[0] == before.find(needle) + len(needle) // 4
    # cached: the same tampered file again
    assert build_extension(spec, HOST, cache_dir=tmp_path).path == bad.path
