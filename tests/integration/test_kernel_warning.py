"""The health check against a real kernel warning: a module built here with the guest
kernel's own Debian headers calls WARN() when it loads, and the run that loaded it fails
with the kernel's `WARNING: CPU: N PID: N at ...` line unless the scenario allows it.

The module is built for refos-252-flatcar, whose kernel comes from bookworm like this
host's toolchain (kbuild's helpers and gcc-12 run here); its headers are installed with
apt the first time (about 15 MB)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import AssertionFailed
from harness.scenario import load_scenario, run_scenario
from harness.targets.registry import get_target

pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

MODULE_SOURCE = """\
#include <linux/bug.h>
#include <linux/errno.h>
#include <linux/module.h>

static int __init provoke_warning_init(void)
{
	WARN(1, "sysext-harness: a kernel warning on purpose\\n");
	return -EAGAIN; /* nothing stays loaded */
}
module_init(provoke_warning_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("sysext-harness test: provokes one kernel warning");
"""

SCENARIO = """\
description: Loads a module that warns; the steps pass.
{allow}steps:
  - run: insmod /root/provoke_warning.ko || true
"""


def build_warning_module(kernel: str, directory: Path) -> Path:
    """provoke_warning.ko for `kernel` (a `uname -r`), with its Debian headers."""
    build = Path("/lib/modules") / kernel / "build"
    if not build.exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        f"linux-headers-{kernel}"], check=True, capture_output=True,
                       timeout=600, env={"DEBIAN_FRONTEND": "noninteractive",
                                         "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "provoke_warning.c").write_text(MODULE_SOURCE)
    (directory / "Makefile").write_text("obj-m := provoke_warning.o\n")
    done = subprocess.run(["make", "-C", str(build), f"M={directory}", "modules"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return directory / "provoke_warning.ko"


def test_a_kernel_warning_fails_the_run_unless_allowed(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = get_target("refos-252-flatcar")
    for allow in ("", "allow_console: 'WARNING: CPU: \\d+ PID: \\d+ at .*provoke_warning'\n"):
        machine = harness.machine(target, "kernel-warning")
        try:
            kernel = machine.succeed("uname -r").strip()
            module = build_warning_module(kernel, tmp_path / "module")
            machine.copy_to(module, "/root/provoke_warning.ko")
            path = tmp_path / ("allowed" if allow else "plain") / "warns.yaml"
            path.parent.mkdir()
            path.write_text(SCENARIO.format(allow=allow))
            scenario = load_scenario(path)
            if not allow:
                with pytest.raises(AssertionFailed) as err:
                    run_scenario(scenario, machine, target, {}, health_check=True)
                message = str(err.value)
                assert "kernel warning (journal): " in message, message
                assert "provoke_warning" in message and "WARNING: CPU: " in message
            else:
                run_scenario(scenario, machine, target, {}, health_check=True)
        finally:
            harness.pool.stop(machine)
