"""Image targets: a distribution's own disk image (Flatcar, Fedora CoreOS, Kairos), booted
through that distribution's firmware and provisioning contract only.

Defined by one YAML file (`targets/NAME.yaml`, see docs/real-images.md) or on the command
line (`--image PATH --persona flatcar`). Nothing of the harness is inside such an image:
the SSH key goes in through the distribution's provisioning config (Ignition
`passwd.users[].sshAuthorizedKeys` in fw_cfg, or a cloud-config `users` entry on a NoCloud
seed), readiness is an SSH login that succeeds, the host key is pinned at first contact,
and what the OS is (os-release, systemd version, architecture) is read from the guest.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import re
import shutil
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import yaml

from harness.buildcache import build_lock, cache_dir
from harness.errors import ConfigError, HarnessError
from harness.targets.boot import FIRMWARES
from harness.targets.model import BaseRecipe, DiskImage, GuestFacts, Persona, Target

# The distributions an image target can be, and how each is provisioned: the persona of
# the same name gives the default user, the Ignition fw_cfg name and the extension
# directories (images/personas/*.yaml); only these fields of it apply to a real image.
DISTRIBUTIONS: tuple[str, ...] = ("flatcar", "fcos", "kairos")
_KEYS = {"name", "image", "format", "firmware", "distribution", "memory", "boot_timeout",
         "sha256", "url", "checksum_url", "expect", "update", "notes"}
_COMPRESSED: dict[str, Callable[..., Any]] = {
    ".bz2": bz2.open, ".xz": lzma.open, ".gz": gzip.open}
_EXPECT_FIELDS = ("ID", "VERSION_ID", "SYSEXT_LEVEL", "ID_LIKE", "VERSION", "VARIANT_ID",
                  "BUILD_ID")
# Hex digest length -> hashlib name, strongest first, for published checksum files.
_DIGEST_LENGTHS = {128: "sha512", 64: "sha256"}
DEFAULT_MEMORY_MB = 2048


# ------------------------------------------------------------------------- definitions

def _fail(message: str, source: str, key: str | None = None, value: object = None,
          allowed: str | list[str] | tuple[str, ...] | None = None) -> ConfigError:
    return ConfigError(message, file=source, key=key, value=value, allowed=allowed)


def load_target_file(path: Path) -> Target:
    """An image target from its YAML file; every problem names the file and key."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise _fail(f"cannot read the target file: {exc.strerror}", source) from exc
    except yaml.YAMLError as exc:
        raise _fail(f"not valid YAML: {exc}", source) from exc
    if not isinstance(data, dict):
        raise _fail("expected a mapping of target settings", source,
                    allowed=sorted(_KEYS))
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise _fail("unknown key", source, unknown[0], allowed=sorted(_KEYS))
    for required in ("image", "distribution"):
        if required not in data:
            raise _fail("missing", source, required,
                        allowed="a disk image path" if required == "image" else DISTRIBUTIONS)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise _fail("invalid target name", source, "name", name,
                    "letters, digits, '.', '_' and '-'")
    distribution = _choice(data["distribution"], DISTRIBUTIONS, source, "distribution")
    firmware = _choice(data.get("firmware", "uefi"), FIRMWARES, source, "firmware")
    memory = data.get("memory", DEFAULT_MEMORY_MB)
    if not isinstance(memory, int) or isinstance(memory, bool) or not 512 <= memory <= 65536:
        raise _fail("memory in MiB must be a whole number from 512 to 65536", source,
                    "memory", memory)
    boot_timeout = data.get("boot_timeout")
    if boot_timeout is not None and (not isinstance(boot_timeout, int | float) or isinstance(
            boot_timeout, bool) or not 10 <= boot_timeout <= 3600):
        raise _fail("seconds from power-on to an SSH login, 10 to 3600", source,
                    "boot_timeout", boot_timeout)
    expect = data.get("expect") or {}
    if not isinstance(expect, dict) or not set(expect) <= set(_EXPECT_FIELDS):
        raise _fail("expected a mapping of os-release fields", source, "expect",
                    expect if not isinstance(expect, dict) else sorted(set(expect)),
                    _EXPECT_FIELDS)
    disk = replace(_disk(data, path.parent, source, "", firmware, distribution, memory,
                         {str(k): str(v) for k, v in expect.items()}),
                   boot_timeout=None if boot_timeout is None else float(boot_timeout))
    return image_target(name, disk)


def target_from_image(image: str, persona: str, firmware: str = "uefi",
                      memory: int = DEFAULT_MEMORY_MB) -> Target:
    """An image target from `--image PATH --persona NAME` on the command line."""
    distribution = _choice(persona, DISTRIBUTIONS, "command line", "--persona")
    firmware = _choice(firmware, FIRMWARES, "command line", "--firmware")
    disk = _disk({"image": image}, Path.cwd(), "command line", "--", firmware, distribution,
                 memory, {})
    stem = Path(image).name.split(".")[0]
    return image_target(re.sub(r"[^A-Za-z0-9._-]", "-", stem) or "image", disk)


def _choice(value: object, allowed: tuple[str, ...], source: str, key: str) -> str:
    if value not in allowed:
        raise _fail("unknown value", source, key, value, allowed)
    return str(value)


def _disk(data: Mapping[str, Any], base: Path, source: str, prefix: str, firmware: str,
          distribution: str, memory: int, expect: dict[str, str]) -> DiskImage:
    """Resolve, download (if asked and missing), unpack and check one disk image."""
    if "update" in data:
        raise _fail("OS updates of image targets are not implemented yet: the distributions "
                    "update /usr in place (Flatcar's USR-B partition, rpm-ostree), which a "
                    "disk switch cannot stand in for; OS-update scenarios run on reference "
                    "targets (docs/real-images.md)", source, "update")
    raw = data["image"]
    if not isinstance(raw, str) or not raw:
        raise _fail("expected a path to a disk image", source, f"{prefix}image", raw)
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base / path
    sha256 = data.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str)
                                   and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise _fail("expected 64 hex digits (quote them: YAML reads a digest of digits "
                    "only as a number)", source, f"{prefix}sha256", sha256)
    url, checksum_url = data.get("url"), data.get("checksum_url")
    for key, value in (("url", url), ("checksum_url", checksum_url)):
        if value is not None and not (isinstance(value, str)
                                      and value.startswith(("http://", "https://"))):
            raise _fail("expected an http(s) URL", source, f"{prefix}{key}", value)
    if not path.exists():
        if url is None:
            raise _fail("no such file (give a local path, or a url: to download it from)",
                        source, f"{prefix}image", str(path))
        path = _download(url, path, source, f"{prefix}url")
    if not path.is_file():
        raise _fail("not a file", source, f"{prefix}image", str(path))
    if sha256 is not None:
        got = file_sha256(path)
        if got != sha256.lower():
            raise _fail(f"checksum mismatch: the file's sha256 is {got}", source,
                        f"{prefix}sha256", sha256)
    if checksum_url is not None:
        _check_published(path, str(checksum_url), source, f"{prefix}checksum_url")
    path = _unpacked(path)
    fmt = data.get("format") or detect_format(path)
    if fmt not in ("qcow2", "raw"):
        raise _fail("unknown disk format", source, f"{prefix}format", fmt, ("qcow2", "raw"))
    return DiskImage(path=path, format=str(fmt), firmware=firmware, distribution=distribution,
                     digest=file_sha256(path), memory_mb=memory, expect=expect, source=source)


def detect_format(path: Path) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


def _digest_stamp(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return cache_dir() / "digests" / key.hexdigest()[:32]


def file_sha256(path: Path) -> str:
    """sha256 of a (large) file, remembered by path, size and mtime in the cache."""
    stamp = _digest_stamp(path)
    with contextlib.suppress(OSError):
        known = stamp.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", known):
            return known
    digest = _hash_file(path, "sha256")
    with contextlib.suppress(OSError):
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
    return digest


def _unpacked(path: Path) -> Path:
    """A `.bz2`/`.xz`/`.gz` download unpacked once into the cache (keyed by its digest)."""
    opener = _COMPRESSED.get(path.suffix)
    if opener is None:
        return path
    dest = cache_dir() / "disks" / f"{file_sha256(path)[:16]}-{path.stem}"
    if dest.exists():
        return dest
    with build_lock():
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{dest.name}")
        try:
            with opener(path, "rb") as src, open(tmp, "wb") as out:
                _copy_sparse(src, out)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            tmp.unlink(missing_ok=True)
            raise HarnessError(f"{path}: cannot unpack: {exc}") from exc
        tmp.rename(dest)
    return dest


def _copy_sparse(src: IO[bytes], out: IO[bytes], block: int = 1 << 20) -> None:
    """Copy leaving holes where the input is zeros: release disks are mostly empty."""
    zeros = bytes(block)
    while chunk := src.read(block):
        if chunk == zeros[:len(chunk)]:
            out.seek(len(chunk), 1)
        else:
            out.write(chunk)
    out.truncate()


def _download(url: str, path: Path, source: str, key: str) -> Path:
    """Fetch `url` into the cache once (for users whose machine can reach it)."""
    dest = cache_dir() / "downloads" / Path(url.split("?")[0]).name
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 22)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(f"{path} is missing and downloading it failed: {exc}", source, key,
                    url) from exc
    tmp.rename(dest)
    return dest


def published_digest(text: str, filename: str) -> tuple[str, str] | None:
    """(algorithm, hex) for `filename` in a published checksum file: a `sha256sum` list
    (Kairos' `.sha256`, most mirrors) or Flatcar's `.DIGESTS` (MD5, SHA1 and SHA512
    sections of `<hex>  <name>` lines). The strongest hash listed wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([0-9a-fA-F]+)\s+\*?(\S+)\s*", line)
        if m and Path(m.group(2)).name == filename and len(m.group(1)) in _DIGEST_LENGTHS:
            found.setdefault(_DIGEST_LENGTHS[len(m.group(1))], m.group(1).lower())
    for algorithm in _DIGEST_LENGTHS.values():
        if algorithm in found:
            return algorithm, found[algorithm]
    return None


def _check_published(path: Path, url: str, source: str, key: str) -> None:
    """Check `path` against the release's checksum file (fetched once, kept in the cache)."""
    cached = cache_dir() / "checksums" / hashlib.sha256(url.encode()).hexdigest()[:32]
    if not cached.exists():
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
                text = resp.read(1 << 20).decode(errors="replace")
        except OSError as exc:
            raise HarnessError(f"{source}: {key}: cannot fetch {url}: {exc}") from exc
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(text)
    entry = published_digest(cached.read_text(), path.name)
    if entry is None:
        raise _fail(f"lists no sha256 or sha512 for {path.name}", source, key, url)
    algorithm, want = entry
    got = file_sha256(path) if algorithm == "sha256" else _hash_file(path, algorithm)
    if got != want:
        raise _fail(f"checksum mismatch: {path.name} has {algorithm} {got}, the release "
                    f"publishes {want}", source, key, url)


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------- the target

def _persona(distribution: str) -> Persona:
    from harness.targets.registry import personas

    for persona in personas():
        if persona.name == distribution:
            return persona
    raise HarnessError(f"no persona {distribution!r} in images/personas")


def image_target(name: str, disk: DiskImage, facts: GuestFacts | None = None) -> Target:
    """The Target of a disk image. Without `facts` it is not yet usable for scenarios:
    `with_facts` fills in what the booted guest said."""
    persona = _persona(disk.distribution)
    # Only the distribution's conventions apply; what the OS is comes from the guest.
    persona = replace(persona, os_release=dict(facts.os_release) if facts else {},
                      update_os_release={}, relink_per_version=False, builtin_extension_dir=None,
                      builtin_extensions=(), files=())
    version = facts.systemd_version if facts else 0
    base = BaseRecipe(name=f"image:{disk.path.name}", suite=name, systemd_version=version,
                      packages=(), default=False,
                      sysupdate=bool(facts and facts.sysupdate))
    return Target(name=name, base=base, persona=persona,
                  architecture=facts.architecture if facts else "x86-64", image=disk,
                  facts=facts)


def with_facts(target: Target, facts: GuestFacts) -> Target:
    assert target.image is not None
    check_expected(target, facts)
    return image_target(target.name, target.image, facts)


def check_expected(target: Target, facts: GuestFacts) -> None:
    """The target file's `expect:` against what the guest says (a wrong image is an error
    of the user's input, found only after booting it)."""
    assert target.image is not None
    for key, want in target.image.expect.items():
        got = facts.os_release.get(key)
        if got != want:
            raise ConfigError(f"the booted image says {key}={got!r}", file=target.image.source,
                              key=f"expect.{key}", value=want)
