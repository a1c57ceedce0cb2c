"""`-n 2`: two targets' machines side by side, one results matrix for the whole run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# VM-booting tests never run next to each other under xdist (they count processes, ...)
pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("refos-257-flatcar", "refos-252-flatcar")


def test_two_workers_share_one_run_and_one_matrix(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios/merge/merge-directory.yaml",
         "scenarios/reload", "--target", ",".join(TARGETS), "-n", "2",
         "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", f"--artifacts={artifacts}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "results matrix" in output
    runs = [p for p in artifacts.iterdir() if p.name.startswith("run-")]
    assert len(runs) == 1, f"workers wrote into {runs}"
    matrix = json.loads((runs[0] / "matrix.json").read_text())
    results = matrix["results"]
    for target in TARGETS:
        assert results["merge-directory"][target]["outcome"] == "pass"
        assert (runs[0] / "merge-directory" / target / "steps.log").exists()
    # n/a cells come from the workers' collection: reload-manager needs systemd 255
    assert results["reload-manager"]["refos-252-flatcar"]["outcome"] == "n/a"
    assert results["reload-manager"]["refos-257-flatcar"]["outcome"] == "pass"
    assert results["reload-manager-ignored"]["refos-257-flatcar"]["outcome"] == "n/a"
    for target in TARGETS:
        assert f"cold boot {target}" in output
    # One target, one worker: its items carry the target as xdist group, so its snapshot
    # is made once. (`-v` prints "[gw0] ... PASSED file::target@target".)
    workers: dict[str, set[str]] = {}
    for worker, target in re.findall(r"\[(gw\d+)\].*?PASSED \S+::(\S+)@", output):
        workers.setdefault(target, set()).add(worker)
    assert set(workers) == set(TARGETS), output[-4000:]
    for target, used in workers.items():
        assert len(used) == 1, f"{target} ran on {sorted(used)}"
