"""The image-target path end to end: a reference target exported as a standalone disk
(GPT, EFI system partition with systemd-boot, /usr and root partitions, nothing of the
harness's test glue), booted with UEFI firmware and provisioned through Ignition in fw_cfg
as a real Flatcar image is, then the core scenarios and `check` on it.

What the harness knows about the image it learns from the guest (facts), and it logs in as
`core` with sudo, never as root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from authored_images import unit_extension

from harness.paths import project_root
from harness.targets.export import export_disk
from harness.targets.registry import get_target

pytestmark = pytest.mark.vm
REFERENCE = "refos-257-flatcar"
CORE = {
    "scenarios/merge/merge-squashfs.yaml": "pass",
    "scenarios/matching/version-id.yaml": "pass",
    "scenarios/matching/sysext-level.yaml": "pass",
    "scenarios/naming/name-suffixes.yaml": "pass",
    "scenarios/matching/release-name-mismatch.yaml": "pass",
    "scenarios/provisioning/flatcar-bakery-layout.yaml": "pass",
    "scenarios/updates/pinned-dropped-after-update.yaml": "n/a",  # no /usr slot B
}


@pytest.fixture(scope="module")
def target_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    disk = export_disk(get_target(REFERENCE), firmware="uefi")
    path = tmp_path_factory.mktemp("targets") / "exported-flatcar.yaml"
    path.write_text(f"image: {disk}\ndistribution: flatcar\nfirmware: uefi\nmemory: 1024\n"
                    f"expect: {{ID: flatcar}}\n")
    return path


def _pytest(*args: str, timeout: float = 2400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=project_root(), timeout=timeout)


def _outcomes(artifacts: Path) -> dict[str, str]:
    matrix = json.loads((artifacts / "latest/matrix.json").read_text())
    return {s: c["outcome"] for s, row in matrix["results"].items() for c in row.values()}


def test_core_scenarios_pass_on_the_exported_disk(target_file: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    res = _pytest(*CORE, "--target", str(target_file), "--artifacts", str(art))
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert _outcomes(art) == {Path(p).stem: want for p, want in CORE.items()}
    # Facts came from the guest: the exported /usr's os-release (slot A of the reference
    # target it was exported from) and its systemd, not anything the harness assumed.
    inputs = json.loads((art / "latest/merge-squashfs/exported-flatcar/inputs.json").read_text())
    assert inputs["os_release"] == get_target(REFERENCE).os_release
    assert inputs["systemd_version"] == 257
    console = (art / "latest/cold-boot-exported-flatcar.console.log").read_text(errors="replace")
    assert "SYSEXT-HARNESS-SSH-READY" not in console and "SYSEXT-HARNESS-HOSTKEY" not in console
    journal = (art / "latest/merge-squashfs/exported-flatcar/journal.txt").read_text()
    assert "Accepted publickey for core" in journal


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "check", *args],
                          capture_output=True, text=True, cwd=project_root(), timeout=1200)


def test_check_good_and_broken_images_on_the_exported_disk(target_file: Path,
                                                           tmp_path: Path) -> None:
    disk = target_file.read_text().split("image: ", 1)[1].split("\n", 1)[0]
    good = unit_extension(tmp_path, "greeter", "/usr/bin/greeter", "Upholds=greeter.service")
    res = _check(str(good), "--as", "greeter.raw", "--image", disk, "--persona", "flatcar",
                 "--unit", "greeter.service", "--run", "greeter",
                 "--artifacts", str(tmp_path / "good"))
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    broken = unit_extension(tmp_path, "broken", "/usr/sbin/broken-daemon",
                            "Upholds=broken.service")
    res = _check(str(broken), "--as", "broken.raw", "--target", str(target_file), "--artifacts",
                 str(tmp_path / "broken"))
    assert res.returncode == 1, res.stdout[-5000:] + res.stderr[-2000:]
    assert "broken.service" in res.stdout


def _qemu_running(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0


def test_bad_image_inputs_exit_2_and_start_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    missing.write_text("image: nowhere.qcow2\ndistribution: flatcar\n")
    res = _pytest("scenarios/merge/merge-squashfs.yaml", "--target", str(missing))
    assert res.returncode == 2 and "image: no such file" in res.stdout + res.stderr
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(1 << 20))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"image: blank.raw\ndistribution: fcos\nsha256: '{'b' * 64}'\n")
    ext = tmp_path / "ext"
    (ext / "usr/lib/extension-release.d").mkdir(parents=True)
    (ext / "usr/lib/extension-release.d/extension-release.ext").write_text("ID=_any\n")
    res = _check(str(ext), "--target", str(wrong))
    assert res.returncode == 2 and "checksum mismatch" in res.stderr
    res = _check(str(ext), "--image", str(blank), "--persona", "ubuntu")
    assert res.returncode == 2 and "--persona" in res.stderr
    assert not _qemu_running(str(blank))


def test_an_image_that_never_answers_fails_in_bounded_time(tmp_path: Path) -> None:
    blank = tmp_path / "never.raw"
    blank.write_bytes(bytes(1 << 20))
    target = tmp_path / "never.yaml"
    target.write_text("image: never.raw\ndistribution: flatcar\nfirmware: bios\n"
                      "boot_timeout: 20\n")
    res = _pytest("scenarios/merge/merge-squashfs.yaml", "--target", str(target), timeout=300)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "SSH not ready 20s after boot" in out and "console tail" in out
    assert not _qemu_running(str(blank))
