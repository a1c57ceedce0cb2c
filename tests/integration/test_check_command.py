"""`sysext-harness check` end to end: real images, a real VM, the guest's own verdict.

The images are what extension authors ship (squashfs, versioned file name, units enabled
through drop-ins, as sysext-bakery does); one is good, one has the bug sysext-bakery#247
shipped: an ExecStart= pointing at a binary the image does not contain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.extensions.ddi import build_ddi
from harness.extensions.signing import generate_key_pair
from harness.extensions.spec import parse_extension_spec
from harness.paths import project_root
from harness.run import run

pytestmark = pytest.mark.vm
TARGET = "refos-257-flatcar"
CLI = [sys.executable, "-m", "harness.cli", "check"]


def image(tmp_path: Path, name: str, exec_start: str, drop_in: str) -> Path:
    root = tmp_path / name
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / f"usr/lib/extension-release.d/extension-release.{name}").write_text(
        "ID=flatcar\nSYSEXT_LEVEL=1.0\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / f"usr/bin/{name}").write_text(f"#!/bin/sh\necho hello from {name}\n")
    (root / f"usr/bin/{name}").chmod(0o755)
    units = root / "usr/lib/systemd/system"
    (units / "multi-user.target.d").mkdir(parents=True)
    (units / f"{name}.service").write_text(
        f"[Unit]\nDescription={name}\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        f"ExecStart={exec_start}\n")
    (units / f"multi-user.target.d/10-{name}.conf").write_text(f"[Unit]\n{drop_in}\n")
    out = tmp_path / f"{name}-1.0-x86-64.raw"
    run(["mksquashfs", root, out, "-quiet", "-no-progress", "-all-root"])
    return out


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--target", TARGET], capture_output=True, text=True,
                          cwd=project_root(), timeout=900)


def test_good_image_passes_every_check(tmp_path: Path) -> None:
    raw = image(tmp_path, "greeter", "/usr/bin/greeter", "Upholds=greeter.service")
    script = tmp_path / "test.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\n[[ $(greeter) == 'hello from greeter' ]]\n")
    res = check(str(raw), "--unit", "greeter.service", "--run", "greeter",
                "--test", str(script), "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "extension-release.greeter [ID=flatcar SYSEXT_LEVEL=1.0]" in res.stdout
    scenario = tmp_path / "art/check/scenarios/check-greeter.yaml"
    assert scenario.exists() and "as: greeter.raw" in scenario.read_text()
    matrix = json.loads((tmp_path / "art/latest/matrix.json").read_text())
    assert {s: {t: c["outcome"] for t, c in row.items()}
            for s, row in matrix["results"].items()} == {"check-greeter": {TARGET: "pass"}}


def test_unit_with_a_missing_binary_fails_the_check(tmp_path: Path) -> None:
    raw = image(tmp_path, "broken", "/usr/sbin/broken-daemon", "Wants=broken.service")
    res = check(str(raw), "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert "no unit failed that had not failed before the extension" in res.stdout
    assert "failed units:" in res.stdout and "broken.service" in res.stdout


def test_signed_ddi_merges_once_its_certificate_is_trusted(tmp_path: Path) -> None:
    pair = generate_key_pair(tmp_path / "keys")
    spec = parse_extension_spec("signedtool", {
        "format": "erofs", "release": {"ID": "_any"},
        "files": [{"path": "/usr/bin/signedtool", "content": "#!/bin/sh\necho signed\n",
                   "mode": "0755"}]}, source="test", key_prefix="extensions.signedtool")
    ddi = build_ddi(spec, {}, key_pair=pair, mode="signed", cache_dir=tmp_path / "cache")
    res = check(str(ddi.path), "--trust", str(pair.certificate), "--run", "signedtool",
                "--no-reboot", "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "sysext ddi (root partition, signed verity)" in res.stdout
