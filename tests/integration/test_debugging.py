"""Debugging by hand, for real: `--keep-on-failure` keeps a failed run's machine and
prints an ssh command that logs in to it; `sysext-harness shell` runs a scenario's steps
up to one and opens a shell (or runs a command) in the machine."""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "harness.cli"]

FAILING = """\
description: Leaves a mark, then fails.
steps:
  - run: echo kept > /run/sysext-harness-kept
    name: leave a mark
  - run: "false"
    name: fail
"""


class _Output:
    """A process's stdout, read line by line by a thread (a select() on a buffered pipe
    misses lines already in the buffer), so a test can wait for one line and read all."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stdout,),
                                        daemon=True)
        self._thread.start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.append(line)

    def line_after(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines[:-1]):
                if marker in line:
                    return self.lines[i + 1]
            time.sleep(0.5)
        raise AssertionError(f"no {marker!r} within {timeout} s:\n{self.text()[-3000:]}")

    def text(self) -> str:
        self._thread.join(timeout=0.1)
        return "".join(self.lines)


def test_keep_on_failure_prints_a_working_ssh_command(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "fails.yaml").write_text(FAILING)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(scenarios),
         "--target", "refos-257-flatcar", "--keep-on-failure",
         "--artifacts", str(tmp_path / "artifacts")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = _Output(process)
    try:
        ssh = shlex.split(output.line_after("log in with:", timeout=600))
        assert "--keep-on-failure: refos-257-flatcar failed: step 2 (fail)" in output.text()
        assert ssh[0] == "ssh" and "StrictHostKeyChecking=yes" in ssh
        key = Path(ssh[ssh.index("-i") + 1])
        assert key.stat().st_mode & 0o077 == 0  # the run's own key, 0600
        seen = subprocess.run([*ssh, "cat /run/sysext-harness-kept"], capture_output=True,
                              text=True, timeout=120)
        assert seen.stdout.strip() == "kept", seen.stderr
        subprocess.run([*ssh, "systemctl poweroff"], capture_output=True, timeout=120)
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    out = output.text()
    assert process.returncode == 1, out
    assert "refos-257-flatcar was powered off" in out
    assert not key.exists()  # the run cleaned up after the person was done


def test_shell_runs_steps_up_to_one_then_a_command_or_a_shell(tmp_path: Path) -> None:
    scenario = tmp_path / "scenarios" / "fails.yaml"
    scenario.parent.mkdir()
    scenario.write_text(FAILING)
    artifacts = ["--artifacts", str(tmp_path / "artifacts")]
    done = subprocess.run(
        [*CLI, "shell", "refos-257-flatcar", "--scenario", str(scenario),
         "--until", "leave a mark", "--command", "cat /run/sysext-harness-kept", *artifacts],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running 1 step(s) of fails" in done.stdout and done.stdout.endswith("kept\n")

    # The interactive path, fed from a pipe: the shell's exit code is the command's.
    shell = subprocess.run([*CLI, "shell", "refos-257-flatcar", *artifacts], cwd=ROOT,
                           input="echo hello-from-shell; exit 3\n", capture_output=True,
                           text=True, timeout=600)
    assert shell.returncode == 3, shell.stdout + shell.stderr
    assert "hello-from-shell" in shell.stdout and "logging in with" in shell.stdout

    bad = subprocess.run([*CLI, "shell", "refos-257-flatcar", "--scenario", str(scenario),
                          "--until", "9"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--until: no such step (got '9')" in bad.stderr
