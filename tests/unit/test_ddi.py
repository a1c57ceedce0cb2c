"""Signed dm-verity DDIs built by the real systemd-repart 257 in the cached trixie toolbox,
checked with host tools only (sfdisk, veritysetup, openssl, unsquashfs, fsck.erofs). No VMs.

The first run bootstraps the toolbox with mmdebstrap (about 30 s); afterwards each DDI
takes well under a second. Tests marked `toolbox` need root and the toolbox.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from harness.errors import CommandError, ConfigError, HarnessError
from harness.extensions import (
    RELAXED_XATTR,
    ExtensionSpec,
    build_extension,
    parse_extension_spec,
)
from harness.extensions.ddi import (
    build_ddi,
    ensure_toolbox,
    read_gpt,
    repart_version,
    signature_object,
)
from harness.extensions.inspect import inspect_image
from harness.extensions.model import DdiArtifact
from harness.extensions.signing import (
    CERT_ENV,
    KEY_ENV,
    VerityKeyPair,
    generate_key_pair,
    key_pair_from_env,
    run_keys,
    signing_key_pair,
    untrusted_key_pair,
)
from harness.run import run

F = TypeVar("F", bound=Callable[..., Any])

HOST = {"ID": "debian", "VERSION_ID": "12", "SYSEXT_LEVEL": "1.0"}
RELEASE_REL = "lib/extension-release.d/extension-release.hello"  # below /usr
RELEASE_TEXT = "ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\n"

# GPT partition type GUIDs for x86-64, from the UAPI Group's Discoverable Partitions
# Specification (https://uapi-group.org/specifications/specs/discoverable_partitions_
# specification/, table "Partition Names"), as `systemd-id128 show` also lists them:
ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"  # Root Partition (x86-64)
ROOT_X86_64_VERITY = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"  # Root Verity Partition
ROOT_X86_64_VERITY_SIG = "41092b05-9fc8-4523-994f-2def0408b176"  # Root Verity Signature
USR_X86_64 = "8484680c-9521-48c6-9c11-b0720656f69e"  # /usr Partition (x86-64)
USR_X86_64_VERITY = "77ff5f63-e7b6-4633-acf4-1565b864c0e6"  # /usr Verity Partition
USR_X86_64_VERITY_SIG = "e7bb33fb-06cf-4e81-8273-e543b413e2e2"  # /usr Verity Signature

HELLO: dict[str, object] = {
    "release": {"ID": "host", "VERSION_ID": "host", "ARCHITECTURE": "host"},
    "relaxed_release_name": True,
    "files": [
        {"path": "/usr/bin/hello", "content": "#!/bin/sh\necho hello\n", "mode": "0755"},
        {"path": "/usr/lib/hello/link", "symlink": "../../bin/hello"},
        {"path": "/usr/share/hello/ro", "directory": True, "mode": "0555"},
        {"path": "/usr/share/hello/ro/inside", "content": "x\n"},
        {"path": "/opt/hello/data", "content": "opt\n"},
    ],
}

_host_tools = ("sfdisk", "veritysetup", "openssl", "unsquashfs", "fsck.erofs")
_missing = [t for t in _host_tools if not shutil.which(t)]
_TOOLBOX_MARKS = (
    pytest.mark.toolbox,
    pytest.mark.skipif(os.geteuid() != 0, reason="the DDI toolbox needs root (mmdebstrap, "
                       "chroot, unshare)"),
    pytest.mark.skipif(not shutil.which("mmdebstrap"), reason="mmdebstrap missing (make setup)"),
    pytest.mark.skipif(bool(_missing), reason=f"host tools missing: {', '.join(_missing)} "
                       "(make setup: fdisk, cryptsetup-bin, openssl, squashfs-tools, "
                       "erofs-utils)"),
)


def needs_toolbox(func: F) -> F:
    """Slow on the first run (bootstraps the toolbox), real every time: skipped only when
    the host cannot build it at all."""
    for mark in _TOOLBOX_MARKS:
        func = mark(func)
    return func


def spec_of(data: dict[str, object], fmt: str = "erofs", name: str = "hello") -> ExtensionSpec:
    spec = parse_extension_spec(name, data, source="t.yaml", key_prefix=f"extensions.{name}")
    return dataclasses.replace(spec, format=fmt)


def sh(*argv: str | Path, check: bool = True) -> tuple[int, str]:
    proc = run(argv, check=check, timeout=120)
    return proc.returncode, (proc.stdout or b"").decode() + (proc.stderr or b"").decode()


def sfdisk_types(image: Path) -> list[str]:
    table = json.loads(run(["sfdisk", "--json", image]).stdout or b"{}")["partitiontable"]
    assert table["label"] == "gpt"
    return [p["type"].lower() for p in table["partitions"]]


def extract_verity(art: DdiArtifact, dest: Path) -> tuple[Path, Path]:
    parts = read_gpt(art.path)
    return parts[0].extract(art.path, dest / "data.img"), parts[1].extract(art.path,
                                                                            dest / "hash.img")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[VerityKeyPair, VerityKeyPair]:
    run_dir = tmp_path_factory.mktemp("run")
    return generate_key_pair(run_dir), untrusted_key_pair(run_dir)


@pytest.fixture(scope="module")
def toolbox() -> Path:
    return ensure_toolbox()


@pytest.fixture(scope="module")
def ddi_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddi-cache")


@pytest.fixture(scope="module")
def build(toolbox: Path, ddi_cache: Path, keys: tuple[VerityKeyPair, VerityKeyPair]):  # type: ignore[no-untyped-def]
    def _build(fmt: str = "erofs", mode: str = "signed", partition: str = "root",
               key: VerityKeyPair | None = None, cache: Path | None = None) -> DdiArtifact:
        return build_ddi(spec_of(HELLO, fmt), HOST, key_pair=key or keys[0], mode=mode,
                         partition=partition, cache_dir=cache or ddi_cache)
    return _build


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(CERT_ENV, raising=False)
    yield


# --------------------------------------------------------------------------- toolbox


@needs_toolbox
def test_toolbox_runs_repart_257(toolbox: Path) -> None:
    assert repart_version(toolbox).startswith("systemd 257")
    assert (toolbox / "usr/lib/systemd/repart/definitions/sysext.repart.d").is_dir()


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize(("fmt", "partition", "expected"), [
    ("erofs", "root", [ROOT_X86_64, ROOT_X86_64_VERITY, ROOT_X86_64_VERITY_SIG]),
    ("squashfs", "usr", [USR_X86_64, USR_X86_64_VERITY, USR_X86_64_VERITY_SIG]),
])
@needs_toolbox
def test_signed_ddi_gpt_types(build, fmt: str, partition: str,  # type: ignore[no-untyped-def]
                              expected: list[str]) -> None:
    art = build(fmt, "signed", partition)
    assert art.path.name == "hello.raw"
    assert (art.mode, art.partition, art.format) == ("signed", partition, f"ddi-{fmt}")
    assert sfdisk_types(art.path) == expected
    # The in-tree GPT reader agrees with sfdisk, byte for byte on offsets and sizes.
    table = json.loads(run(["sfdisk", "--json", art.path]).stdout or b"{}")["partitiontable"]
    ours = read_gpt(art.path)
    assert [(p.start, p.size) for p in ours] == [
        (q["start"] * 512, q["size"] * 512) for q in table["partitions"]]
    # repart's DDI convention (which systemd-dissect relies on to pair them): the data
    # partition's UUID is the root hash's first half, the verity partition's the second.
    assert art.root_hash is not None
    assert ours[0].uuid.replace("-", "") == art.root_hash[:32]
    assert ours[1].uuid.replace("-", "") == art.root_hash[32:]


@needs_toolbox
def test_unsigned_ddi_has_no_signature_partition(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    art = build("erofs", "unsigned")
    assert sfdisk_types(art.path) == [ROOT_X86_64, ROOT_X86_64_VERITY]
    assert signature_object(art.path) is None
    assert art.certificate_fingerprint is None and art.root_hash
    data, hashes = extract_verity(art, tmp_path)
    sh("veritysetup", "verify", data, hashes, art.root_hash)


@needs_toolbox
def test_plain_ddi_has_only_the_data_partition(build) -> None:  # type: ignore[no-untyped-def]
    art = build("squashfs", "plain")
    assert sfdisk_types(art.path) == [ROOT_X86_64]
    assert art.root_hash is None


# --------------------------------------------------------------------------- verity


@pytest.mark.parametrize("fmt", ["erofs", "squashfs"])
@needs_toolbox
def test_verity_hash_tree_matches_root_hash(build, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    art = build(fmt, "signed")
    data, hashes = extract_verity(art, tmp_path)
    sh("veritysetup", "verify", data, hashes, art.root_hash)
    # The check is real: one flipped byte in the file system is caught.
    raw = bytearray(data.read_bytes())
    raw[1024] ^= 0xFF
    data.write_bytes(bytes(raw))
    rc, out = sh("veritysetup", "verify", data, hashes, art.root_hash, check=False)
    assert rc != 0, out


# --------------------------------------------------------------------------- signature


@needs_toolbox
def test_signature_is_pkcs7_of_root_hash_by_certificate(build, keys,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    trusted, _untrusted = keys
    art = build("erofs", "signed")
    obj = signature_object(art.path)
    assert obj is not None
    assert set(obj) == {"rootHash", "certificateFingerprint", "signature"}
    # The root hash in the signature partition is the one the hash tree really has.
    data, hashes = extract_verity(art, tmp_path)
    sh("veritysetup", "verify", data, hashes, obj["rootHash"])
    assert obj["rootHash"] == art.root_hash
    assert obj["certificateFingerprint"] == trusted.fingerprint == art.certificate_fingerprint
    der = x509.load_pem_x509_certificate(trusted.certificate.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == trusted.fingerprint

    sig = tmp_path / "roothash.p7s"
    sig.write_bytes(base64.b64decode(obj["signature"]))
    content = tmp_path / "roothash"
    content.write_text(obj["rootHash"])  # what is signed: the hex string, no newline
    # -nointern: trust only the given certificate, as systemd does with /etc/verity.d.
    rc, out = sh("openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", sig,
                 "-content", content, "-nointern", "-certfile", trusted.certificate,
                 "-CAfile", trusted.certificate)
    assert "Verification successful" in out
    # A different root hash does not verify with the same signature.
    content.write_text("0" * 64)
    rc, out = sh("openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", sig,
                 "-content", content, "-nointern", "-certfile", trusted.certificate,
                 "-CAfile", trusted.certificate, check=False)
    assert rc != 0, out
    # The PKCS#7 carries the signer's certificate (python cryptography reads it).
    certs = pkcs7.load_der_pkcs7_certificates(sig.read_bytes())
    assert [c.public_bytes(serialization.Encoding.DER) for c in certs] == [der]


@needs_toolbox
def test_untrusted_signature_does_not_verify_against_trusted_cert(build, keys,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    trusted, untrusted = keys
    assert trusted.fingerprint != untrusted.fingerprint
    good = build("erofs", "signed")
    bad = build("erofs", "signed", key=untrusted)
    assert bad.digest != good.digest and bad.path != good.path
    # Same tree, same file system and hash tree: only the signature partition differs.
    assert bad.root_hash == good.root_hash == build("erofs", "unsigned").root_hash
    obj = signature_object(bad.path)
    assert obj is not None and obj["certificateFingerprint"] == untrusted.fingerprint
    sig = tmp_path / "roothash.p7s"
    sig.write_bytes(base64.b64decode(obj["signature"]))
    content = tmp_path / "roothash"
    content.write_text(obj["rootHash"])
    common = ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", sig,
              "-content", content]
    for extra in (["-nointern", "-certfile", trusted.certificate, "-CAfile",
                   trusted.certificate],
                  ["-CAfile", trusted.certificate]):
        rc, out = sh(*common, *extra, check=False)
        assert rc != 0, out
    # ... while the untrusted certificate itself does verify it (the image is well-formed).
    sh(*common, "-nointern", "-certfile", untrusted.certificate, "-CAfile",
       untrusted.certificate)


# --------------------------------------------------------------------------- contents


@needs_toolbox
def test_root_partition_holds_the_whole_tree(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    art = build("squashfs", "signed", "root")
    data = read_gpt(art.path)[0].extract(art.path, tmp_path / "data.img")
    out = tmp_path / "x"
    sh("unsquashfs", "-no-progress", "-d", out, data)
    assert (out / "usr" / RELEASE_REL).read_text() == RELEASE_TEXT
    assert os.getxattr(out / "usr" / RELEASE_REL, RELAXED_XATTR) == b"0"
    assert stat.S_IMODE((out / "usr/bin/hello").stat().st_mode) == 0o755
    assert os.readlink(out / "usr/lib/hello/link") == "../../bin/hello"
    assert stat.S_IMODE((out / "usr/share/hello/ro").stat().st_mode) == 0o555
    assert (out / "opt/hello/data").read_text() == "opt\n"
    _, listing = sh("unsquashfs", "-lln", data)
    assert all(" 0/0 " in line for line in listing.splitlines() if "squashfs-root" in line)


@needs_toolbox
def test_usr_partition_holds_usr_only(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    art = build("erofs", "signed", "usr")
    data = read_gpt(art.path)[0].extract(art.path, tmp_path / "data.img")
    out = tmp_path / "x"
    sh("fsck.erofs", "--preserve-perms", f"--extract={out}", data)
    assert (out / RELEASE_REL).read_text() == RELEASE_TEXT  # mounted at /usr
    assert (out / "bin/hello").read_text() == "#!/bin/sh\necho hello\n"
    assert not (out / "usr").exists() and not (out / "opt").exists()


@needs_toolbox
@pytest.mark.parametrize(("fmt", "mode", "partition"), [
    ("squashfs", "signed", "usr"), ("erofs", "unsigned", "root"), ("erofs", "plain", "usr")])
def test_check_reads_ddis(build, fmt: str, mode: str, partition: str) -> None:  # type: ignore[no-untyped-def]
    """`sysext-harness check` finds the release file and units inside the data partition."""
    info = inspect_image(build(fmt, mode, partition).path)
    assert (info.format, info.ddi_partition, info.name) == ("ddi", partition, "hello")
    assert (info.verity, info.signed) == (mode != "plain", mode == "signed")
    assert info.release == {"ID": "debian", "VERSION_ID": "12", "ARCHITECTURE": "x86-64"}
    assert info.top_level == (("usr",) if partition == "usr" else ("opt", "usr"))
    assert info.ignored_entries() == ()


# --------------------------------------------------------------------------- caching


@pytest.fixture
def build_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The temporary directories the DDI builder makes (in the shared toolbox and the
    cache): only this test's own, since other harness runs may build at the same time."""
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        path = real_mkdtemp(*args, **kwargs)
        made.append(Path(path))
        return path

    monkeypatch.setattr("harness.extensions.ddi.tempfile.mkdtemp", mkdtemp)
    return made


@needs_toolbox
def test_cached_and_reproducible(build, tmp_path: Path, toolbox: Path,  # type: ignore[no-untyped-def]
                                 build_dirs: list[Path]) -> None:
    first = build("erofs", "signed", cache=tmp_path / "a")
    st = first.path.stat()
    again = build("erofs", "signed", cache=tmp_path / "a")
    assert again == first and again.path.stat().st_mtime_ns == st.st_mtime_ns
    other = build("erofs", "signed", cache=tmp_path / "b")
    assert other.digest == first.digest
    assert other.path.read_bytes() == first.path.read_bytes()  # same bytes from scratch
    # Nothing is left behind: no build dirs (with the key copy) in the toolbox, no temp
    # dirs in the cache.
    assert build_dirs and not [p for p in build_dirs if p.exists()]
    assert [p.name for p in (tmp_path / "a/extensions").iterdir()] == [first.digest]
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["ddi.json", "hello.raw"]


@needs_toolbox
def test_failed_build_cleans_up(build, tmp_path: Path, toolbox: Path, keys,  # type: ignore[no-untyped-def]
                                build_dirs: list[Path]) -> None:
    spec = spec_of(HELLO, "erofs")
    with pytest.raises(CommandError, match="systemd-repart"):
        build_ddi(spec, HOST, key_pair=keys[0], architecture="no-such-arch",
                  cache_dir=tmp_path)
    assert build_dirs and not [p for p in build_dirs if p.exists()]
    assert list((tmp_path / "extensions").iterdir()) == []


def test_bad_ddi_requests_are_config_errors(tmp_path: Path) -> None:
    confext = parse_extension_spec("c", {"type": "confext", "format": "erofs"},
                                   source="t.yaml", key_prefix="extensions.c")
    with pytest.raises(ConfigError, match="root partition"):
        build_ddi(confext, HOST, key_pair=None, mode="unsigned", partition="usr",
                  cache_dir=tmp_path)
    directory = spec_of({}, "directory")
    with pytest.raises(ConfigError, match="format") as exc:
        build_ddi(directory, HOST, key_pair=None, mode="unsigned", cache_dir=tmp_path)
    assert "erofs, squashfs" in str(exc.value)
    with pytest.raises(ConfigError, match="mode"):
        build_ddi(spec_of({}), HOST, key_pair=None, mode="sgned", cache_dir=tmp_path)


# --------------------------------------------------------------------------- key pairs


def test_generated_key_pair_files(tmp_path: Path) -> None:
    pair = generate_key_pair(tmp_path)
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.key.parent.stat().st_mode) == 0o700
    assert pair.origin == "generated"
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    # Asking again in the same run gives the same pair; the untrusted one is another.
    assert generate_key_pair(tmp_path) == pair
    other = untrusted_key_pair(tmp_path)
    assert other.fingerprint != pair.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verity-signing", "verity-untrusted"]


def test_env_pair_is_used(tmp_path: Path, clean_env: None,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    mine = generate_key_pair(tmp_path / "mine")
    monkeypatch.setenv(KEY_ENV, str(mine.key))
    monkeypatch.setenv(CERT_ENV, str(mine.certificate))
    pair = signing_key_pair(tmp_path / "run")
    assert pair.origin == "environment" and pair.fingerprint == mine.fingerprint
    assert not (tmp_path / "run").exists()  # nothing generated


def test_no_env_generates(tmp_path: Path, clean_env: None) -> None:
    assert key_pair_from_env() is None
    assert signing_key_pair(tmp_path).origin == "generated"


def _bad_files(tmp: Path) -> dict[str, Path]:
    good = generate_key_pair(tmp / "good")
    other = generate_key_pair(tmp / "other")
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a key\n")
    encrypted = tmp / "encrypted.pem"
    key = serialization.load_pem_private_key(good.key.read_bytes(), password=None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw")))
    edkey = tmp / "ed25519.pem"
    edkey.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return {"key": good.key, "cert": good.certificate, "other_key": other.key,
            "garbage": garbage, "encrypted": encrypted, "ed25519": edkey,
            "missing": tmp / "nope.pem", "dir": tmp}


@pytest.mark.parametrize(("key", "cert", "var", "message"), [
    ("key", None, CERT_ENV, f"{KEY_ENV} is set but {CERT_ENV} is not"),
    (None, "cert", KEY_ENV, f"{CERT_ENV} is set but {KEY_ENV} is not"),
    ("missing", "cert", KEY_ENV, "no such file"),
    ("key", "missing", CERT_ENV, "no such file"),
    ("dir", "cert", KEY_ENV, "no such file"),
    ("garbage", "cert", KEY_ENV, "not a usable private key"),
    ("encrypted", "cert", KEY_ENV, "not a usable private key"),
    ("ed25519", "cert", KEY_ENV, "not a usable private key"),
    ("key", "garbage", CERT_ENV, "not an X.509 certificate"),
    ("key", "key", CERT_ENV, "not an X.509 certificate"),
    ("other_key", "cert", KEY_ENV, "does not belong to the certificate"),
])
def test_bad_env_values_are_config_errors(tmp_path: Path, key: str | None, cert: str | None,
                                          var: str, message: str) -> None:
    files = _bad_files(tmp_path)
    env = {}
    if key:
        env[KEY_ENV] = str(files[key])
    if cert:
        env[CERT_ENV] = str(files[cert])
    with pytest.raises(ConfigError) as exc:
        key_pair_from_env(env)
    err = exc.value
    assert err.key == var
    assert message in err.message
    text = str(err)
    assert var in text and "allowed:" in text
    bad_value = env.get(var)
    if bad_value is not None:
        assert repr(bad_value) in text  # names the value it refused


def test_run_keys_pick_the_pair_for_a_ddi_value(tmp_path: Path, clean_env: None) -> None:
    keys = run_keys(tmp_path)
    assert keys.for_ddi("signed") == keys.trusted
    assert keys.for_ddi("untrusted") == keys.untrusted
    assert keys.for_ddi("unsigned") is None and keys.for_ddi("plain") is None
    assert run_keys(tmp_path) == keys  # one pair per run directory


# --------------------------------------------------------------------------- spec keys


@pytest.mark.parametrize(("data", "key", "message"), [
    ({"ddi": "sined"}, "extensions.hello.ddi", "unknown ddi value"),
    ({"ddi": "signed", "format": "directory"}, "extensions.hello.ddi", "not a directory"),
    ({"ddi_partition": "usr"}, "extensions.hello.ddi_partition", "needs ddi:"),
    ({"ddi": "signed", "ddi_partition": "var"}, "extensions.hello.ddi_partition",
     "unknown ddi_partition"),
    ({"ddi": "signed", "type": "confext", "ddi_partition": "usr"},
     "extensions.hello.ddi_partition", "needs a root partition"),
])
def test_bad_ddi_spec_keys(data: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_extension_spec("hello", data, source="t.yaml", key_prefix="extensions.hello")
    assert exc.value.key == key and message in exc.value.message


def test_ddi_spec_keys_parse() -> None:
    spec = parse_extension_spec("hello", {"ddi": "untrusted", "ddi_partition": "usr",
                                          "format": "erofs"},
                                source="t.yaml", key_prefix="extensions.hello")
    assert (spec.ddi, spec.ddi_partition, spec.format) == ("untrusted", "usr", "erofs")
    assert parse_extension_spec("hello", {"ddi": "none"}, source="t.yaml",
                                key_prefix="extensions.hello").ddi is None


def test_signed_ddi_without_keys_is_refused(tmp_path: Path) -> None:
    spec = parse_extension_spec("hello", {"ddi": "signed"}, source="t.yaml",
                                key_prefix="extensions.hello")
    with pytest.raises(HarnessError, match="verity keys"):
        build_extension(spec, HOST, cache_dir=tmp_path)


@needs_toolbox
def test_build_extension_dispatches_ddi_values(tmp_path: Path, clean_env: None) -> None:
    keys = run_keys(tmp_path / "run")
    types = {}
    for value in ("signed", "untrusted", "unsigned", "plain"):
        spec = parse_extension_spec("hello", {**HELLO, "ddi": value, "format": "erofs"},
                                    source="t.yaml", key_prefix="extensions.hello")
        art = build_extension(spec, HOST, cache_dir=tmp_path / "cache", keys=keys)
        assert isinstance(art, DdiArtifact) and art.path.name == "hello.raw"
        types[value] = sfdisk_types(art.path)
        obj = signature_object(art.path)
        fingerprint = obj["certificateFingerprint"] if obj else None
        assert fingerprint == {"signed": keys.trusted.fingerprint,
                               "untrusted": keys.untrusted.fingerprint}.get(value)
    sig = [ROOT_X86_64, ROOT_X86_64_VERITY, ROOT_X86_64_VERITY_SIG]
    assert types == {"signed": sig, "untrusted": sig, "unsigned": sig[:2],
                     "plain": sig[:1]}
