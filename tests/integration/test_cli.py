"""The command line and pytest entry points: exit codes and messages on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.paths import cache_dir, project_root

CLI = [sys.executable, "-m", "harness.cli"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], capture_output=True, text=True, cwd=cwd or project_root(),
                          timeout=300)


def _runs() -> set[str]:
    base = cache_dir() / "runs"
    return {p.name for p in base.iterdir()} if base.exists() else set()


def test_targets_lists_versions_and_personas() -> None:
    res = _run(*CLI, "targets")
    assert res.returncode == 0
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
    assert rows["refos-257-flatcar"][1:3] == ["257", "flatcar"]
    assert rows["refos-252-fcos"][1:3] == ["252", "fcos"]
    assert "refos-257-kairos" in rows


def test_bad_scenario_exits_2_naming_file_key_and_allowed(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    bad = scenarios / "bad.yaml"
    bad.write_text(
        "description: broken\n"
        "extensions:\n  hello: {files: [{path: /usr/bin/x, content: x, mode: '0755'}]}\n"
        "steps:\n  - install: helo\n  - merge:\n    expct: {exit: 0}\n"
    )
    res = _run(*CLI, "validate", str(bad))
    assert res.returncode == 2
    assert f"{bad}" in res.stderr
    assert "steps[0].install" in res.stderr and "hello" in res.stderr
    assert "steps[1]" in res.stderr and "expct" in res.stderr

    before = _runs()
    res = _run(sys.executable, "-m", "pytest", str(bad), "-p", "no:cacheprovider",
               "--target", "refos-257-flatcar", cwd=tmp_path)
    assert res.returncode == 2, res.stdout
    assert "steps[0].install" in res.stdout
    assert _runs() == before, "a run directory was created for an invalid scenario"


def test_unknown_target_exits_2(tmp_path: Path) -> None:
    res = _run(*CLI, "images", "build", "refos-999-nothing")
    assert res.returncode == 2
    assert "refos-999-nothing" in res.stderr and "refos-257-flatcar" in res.stderr
    res = _run(sys.executable, "-m", "pytest", "scenarios/merge", "--target", "nope-*",
               "-p", "no:cacheprovider")
    assert res.returncode == 2
    assert "no target matches" in (res.stdout + res.stderr)


def test_bad_vcpus_exits_2_before_anything_boots(tmp_path: Path) -> None:
    before = _runs()
    res = _run(sys.executable, "-m", "pytest", "scenarios/merge", "--target",
               "refos-257-flatcar", "--vcpus", "none", "-p", "no:cacheprovider")
    assert res.returncode == 2
    assert "--vcpus" in res.stdout + res.stderr and "'none'" in res.stdout + res.stderr
    image = tmp_path / "x.raw"
    image.write_bytes(b"")
    res = _run(*CLI, "check", str(image), "--vcpus", "0")
    assert res.returncode == 2
    assert "--vcpus" in res.stderr and "'0'" in res.stderr
    assert _runs() == before, "a run directory was created for bad input"


def test_sysext_build_from_the_command_line(tmp_path: Path) -> None:
    res = _run(*CLI, "sysext", "build", "examples/hello-sysext.yaml", "-o", str(tmp_path),
               "--target", "refos-257-fcos")
    assert res.returncode == 0, res.stderr
    built = Path(res.stdout.strip())
    assert built.parent == tmp_path and built.suffix == ".raw"
    assert built.read_bytes()[:4] == b"hsqs"  # squashfs magic
    listing = subprocess.run(["unsquashfs", "-cat", str(built),
                              f"usr/lib/extension-release.d/extension-release.{built.stem}"],
                             capture_output=True, text=True).stdout
    assert "ID=fedora" in listing


def test_bad_spec_file_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nformat: zip\n")
    res = _run(*CLI, "sysext", "build", str(spec), "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "format" in res.stderr and "squashfs" in res.stderr
