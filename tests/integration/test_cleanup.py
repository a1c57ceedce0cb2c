"""No QEMU process or overlay outlives a run: not on Ctrl-C, not when the harness is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.machine.rundir import RunDir

# VM-booting tests never run next to each other under xdist (they count processes, ...)
pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

# A harness process that starts a cold boot and then just waits to be interrupted.
_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.machine.accel import tcg
    from harness.machine.keys import generate_ssh_key
    from harness.machine.machine import Machine
    from harness.machine.rundir import RunDir
    from harness.targets.registry import get_target
    from harness.targets.boot import boot_spec
    spec = boot_spec(get_target(sys.argv[1]))
    run = RunDir()
    try:
        m = Machine(spec, run.path / "m", generate_ssh_key(run.path / "ssh"), tcg())
        print(run.path, flush=True)
        m.boot()
    finally:
        run.cleanup()
""")


def _qemu_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "qemu-system"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _start_child(target: str) -> tuple[subprocess.Popen[str], Path, int]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, target], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    run_path = Path(proc.stdout.readline().strip())
    deadline = time.monotonic() + 60
    while not _qemu_children(proc.pid):
        assert time.monotonic() < deadline, "child never started QEMU"
        time.sleep(0.2)
    return proc, run_path, _qemu_children(proc.pid)[0]


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie is gone for our purpose
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_stops_qemu_and_removes_overlays(target) -> None:  # type: ignore[no-untyped-def]
    proc, run_path, qemu = _start_child(target.name)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert _gone(qemu), "QEMU outlived an interrupted harness"
    assert not run_path.exists(), "run directory (overlays) left behind after Ctrl-C"


def test_killed_harness_takes_qemu_with_it(target) -> None:  # type: ignore[no-untyped-def]
    proc, run_path, qemu = _start_child(target.name)
    proc.kill()
    proc.wait(timeout=30)
    assert _gone(qemu), "QEMU outlived a SIGKILLed harness"
    assert run_path.exists()  # nobody could clean up in-process ...
    RunDir(base=run_path.parent).cleanup()  # ... so the next run sweeps it
    assert not run_path.exists(), "the next run did not sweep the dead run's directory"
