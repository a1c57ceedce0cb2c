"""Image targets (pure logic): target files, command-line images, unpacking, checksums,
guest facts, the key delivered through the distribution's channel, and applicability."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.scenario import load_scenario
from harness.scenario.applicability import applicability
from harness.targets.boot import boot_spec
from harness.targets.facts import FACTS_COMMAND, parse_facts, parse_os_release
from harness.targets.image_target import (
    file_sha256,
    image_target,
    load_target_file,
    target_from_image,
    with_facts,
)
from harness.targets.model import GuestFacts
from harness.targets.selection import select_targets

REPO = Path(__file__).resolve().parents[2]
FACTS = GuestFacts(os_release={"ID": "flatcar", "VERSION_ID": "4081.2.0", "SYSEXT_LEVEL": "1.0"},
                   systemd_version=255, architecture="x86-64", sysupdate=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSEXT_HARNESS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(4092))
    return path


def write(tmp_path: Path, text: str, name: str = "flatcar-stable.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_target_file_defaults_and_paths_relative_to_it(tmp_path: Path, disk: Path) -> None:
    t = load_target_file(write(tmp_path, "image: disk.qcow2\ndistribution: flatcar\n"))
    assert t.name == "flatcar-stable" and t.kind == "image"
    assert t.image is not None
    assert (t.image.path, t.image.format, t.image.firmware) == (disk, "qcow2", "uefi")
    assert t.persona.default_user == "core"
    assert t.persona.ignition_fw_cfg_name == "opt/org.flatcar-linux/config"
    assert t.persona.builtin_extensions == () and t.persona.update_os_release == {}


@pytest.mark.parametrize(("text", "key", "words"), [
    ("image: disk.qcow2\n", "distribution", "missing"),
    ("image: disk.qcow2\ndistribution: ubuntu\n", "distribution", "flatcar, fcos, kairos"),
    ("image: nope.img\ndistribution: fcos\n", "image", "no such file"),
    ("image: disk.qcow2\ndistribution: fcos\nfirmware: coreboot\n", "firmware", "bios, uefi"),
    ("image: disk.qcow2\ndistribution: fcos\nmemory: 64\n", "memory", "512"),
    ("image: disk.qcow2\ndistribution: fcos\nsha256: abc\n", "sha256", "64 hex"),
    ("image: disk.qcow2\ndistribution: fcos\nsha256: " + "a" * 64 + "\n", "sha256",
     "checksum mismatch"),
    ("image: disk.qcow2\ndistribution: fcos\nexpect: {VERSION: 1, IDD: x}\n", "expect",
     "os-release"),
    ("image: disk.qcow2\ndistribution: fcos\nbogus: 1\n", "bogus", "unknown key"),
    ("image: disk.qcow2\ndistribution: fcos\nupdate: {image: next.img}\n", "update",
     "not implemented yet"),
])
def test_bad_target_files_name_file_key_and_what_is_accepted(
        tmp_path: Path, disk: Path, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_target_file(path)
    assert err.value.file == str(path) and err.value.key == key
    assert words in str(err.value)


def test_checksum_accepted_and_compressed_image_unpacked_once(tmp_path: Path) -> None:
    raw = b"\x00" * (3 << 20) + b"disk data" + b"\x00" * (1 << 20)
    packed = tmp_path / "fcos.raw.bz2"
    packed.write_bytes(bz2.compress(raw))
    text = f"image: fcos.raw.bz2\ndistribution: fcos\nsha256: {file_sha256(packed)}\n"
    t = load_target_file(write(tmp_path, text))
    assert t.image is not None and t.image.format == "raw"
    assert t.image.path.read_bytes() == raw
    assert t.image.path.stat().st_blocks * 512 < len(raw)  # holes where the zeros were
    mtime = t.image.path.stat().st_mtime_ns
    assert load_target_file(write(tmp_path, text)).image.path.stat().st_mtime_ns == mtime  # type: ignore[union-attr]


def test_command_line_image(disk: Path) -> None:
    t = target_from_image(str(disk), "kairos", "bios")
    assert (t.name, t.persona.default_user, t.image.firmware) == ("disk", "kairos", "bios")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="--persona"):
        select_targets(None, image=str(disk))
    with pytest.raises(ConfigError, match="give the image"):
        select_targets(None, persona="fcos")


def test_selection_mixes_reference_names_and_target_files(tmp_path: Path, disk: Path) -> None:
    path = write(tmp_path, "image: disk.qcow2\ndistribution: flatcar\n")
    names = [t.name for t in select_targets([f"refos-257-flatcar,{path}"])]
    assert names == ["refos-257-flatcar", "flatcar-stable"]
    assert [t.name for t in select_targets([str(path)])] == ["flatcar-stable"]


def test_facts_are_read_from_the_guests_answer() -> None:
    output = ("NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION_ID=4081.2.0\n"
              "SYSEXT_LEVEL=1.0\n# comment\n--sysext-harness-facts--\n"
              "systemd 255 (255.8)\n--sysext-harness-facts--\nx86_64\n6.6.54-flatcar\n"
              "--sysext-harness-facts--\nno\n")
    facts = parse_facts(output)
    assert facts.os_release["NAME"] == "Flatcar Container Linux by Kinvolk"
    assert (facts.systemd_version, facts.architecture, facts.sysupdate, facts.kernel) == (
        255, "x86-64", False, "6.6.54-flatcar")
    assert parse_os_release("A='x y'\nB=\"q\\\"uote\"\n") == {"A": "x y", "B": 'q"uote'}
    assert "systemctl --version" in FACTS_COMMAND


def test_with_facts_resolves_os_release_and_checks_expect(tmp_path: Path, disk: Path) -> None:
    path = write(tmp_path, "image: disk.qcow2\ndistribution: flatcar\n"
                           "expect: {ID: flatcar, VERSION_ID: 4081.2.0}\n")
    t = with_facts(load_target_file(path), FACTS)
    assert t.os_release == FACTS.os_release and t.systemd_version == 255
    assert "SYSEXT_HARNESS_TARGET" not in t.os_release
    wrong = write(tmp_path, "image: disk.qcow2\ndistribution: flatcar\nexpect: {ID: fedora}\n",
                  "wrong.yaml")
    with pytest.raises(ConfigError) as err:
        with_facts(load_target_file(wrong), FACTS)
    assert err.value.key == "expect.ID" and "'flatcar'" in str(err.value)


def test_key_goes_in_through_the_distributions_channel(tmp_path: Path, disk: Path) -> None:
    flatcar = boot_spec(with_facts(target_from_image(str(disk), "flatcar"), FACTS))
    assert (flatcar.kernel, flatcar.firmware, flatcar.ssh_user) == (None, "uefi", "core")
    assert flatcar.ssh_key_fw_cfg is None and flatcar.readiness.ready_line is None
    spec = flatcar.with_key("ssh-ed25519 AAAA test", tmp_path)
    config = json.loads(spec.fw_cfg["opt/org.flatcar-linux/config"].read_text())
    assert config["passwd"]["users"] == [{"name": "core",
                                          "sshAuthorizedKeys": ["ssh-ed25519 AAAA test"]}]
    assert spec.first_boot_key is None  # delivered once
    kairos = boot_spec(image_target("k", target_from_image(str(disk), "kairos").image,  # type: ignore[arg-type]
                                    FACTS)).with_key("ssh-ed25519 AAAA test", tmp_path)
    assert kairos.fw_cfg == {} and kairos.drives[-1].path.name == "seed.iso"
    assert "kairos" in (tmp_path / "user-data").read_text()


def test_os_update_and_builtin_scenarios_are_not_applicable_to_image_targets(
        disk: Path) -> None:
    t = with_facts(target_from_image(str(disk), "flatcar"), FACTS)
    update = load_scenario(REPO / "scenarios/updates/pinned-dropped-after-update.yaml")
    ok, reason = applicability(update, t)
    assert not ok and "image targets cannot run OS updates" in reason
    builtin = load_scenario(REPO / "scenarios/provisioning/flatcar-mask-builtin.yaml")
    assert not applicability(builtin, t)[0]
    merge = load_scenario(REPO / "scenarios/merge/merge-squashfs.yaml")
    assert applicability(merge, t) == (True, "")


# --- a synthetic Flatcar release directory on a loopback HTTP server ---------------------

@pytest.fixture
def release(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`flatcar_production_qemu_uefi_image.img.bz2` and its `.DIGESTS` as Flatcar publishes
    them (MD5, SHA1 and SHA512 sections), served on 127.0.0.1."""
    import functools
    import hashlib
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "amd64-usr" / "current"
    served.mkdir(parents=True)
    name = "flatcar_production_qemu_uefi_image.img.bz2"
    data = bz2.compress(b"QFI\xfb" + bytes(8188))
    (served / name).write_bytes(data)
    digests = "".join(f"# {title} HASH\n{hashlib.new(algo, data).hexdigest()}  {name}\n"
                      for title, algo in (("MD5", "md5"), ("SHA1", "sha1"),
                                          ("SHA512", "sha512")))
    (served / f"{name}.DIGESTS").write_text(digests)
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/amd64-usr/current/{name}"
    try:
        yield base, served / f"{name}.DIGESTS"
    finally:
        server.shutdown()


def test_download_checked_against_published_digests(tmp_path: Path, release) -> None:  # type: ignore[no-untyped-def]
    url, _digests = release
    text = (f"image: flatcar_production_qemu_uefi_image.img.bz2\nurl: {url}\n"
            f"checksum_url: {url}.DIGESTS\ndistribution: flatcar\n")
    t = load_target_file(write(tmp_path / "..", text, "dl.yaml"))
    assert t.image is not None and t.image.format == "qcow2"
    assert t.image.path.name.endswith("-flatcar_production_qemu_uefi_image.img")  # unpacked


def test_published_digest_mismatch_is_refused(tmp_path: Path, release) -> None:  # type: ignore[no-untyped-def]
    url, digests = release
    lines = digests.read_text().splitlines()
    lines[-1] = "f" * 128 + "  flatcar_production_qemu_uefi_image.img.bz2"
    digests.write_text("\n".join(lines) + "\n")
    text = (f"image: flatcar_production_qemu_uefi_image.img.bz2\nurl: {url}\n"
            f"checksum_url: {url}.DIGESTS\ndistribution: flatcar\n")
    with pytest.raises(ConfigError) as err:
        load_target_file(write(tmp_path, text, "bad.yaml"))
    assert err.value.key == "checksum_url" and "sha512" in str(err.value)
    assert "the release publishes " + "f" * 128 in str(err.value)


def test_expected_provisioning_failures_are_not_applicable_to_image_targets(
        disk: Path) -> None:
    t = with_facts(target_from_image(str(disk), "flatcar"), FACTS)
    wrong_hash = load_scenario(REPO / "scenarios/provisioning/flatcar-wrong-hash.yaml")
    ok, reason = applicability(wrong_hash, t)
    assert not ok and "failed boot" in reason
