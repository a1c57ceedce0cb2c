"""The health check against a real LSM denial: AppArmor, which the reference kernels have
on, denies a confined program a file, and the run fails with the kernel's
`apparmor="DENIED"` audit line unless the scenario allows it.

The reference images load no policy and boot with `audit=0` (which also silences
denials), so this machine boots with `audit=1`, and the policy is compiled here with the
host's apparmor_parser against the guest kernel's own feature set (read from its
securityfs), then loaded through /sys/kernel/security/apparmor/.load."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import AssertionFailed
from harness.machine.machine import Machine
from harness.scenario import load_scenario, run_scenario

pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

PROFILE = """\
profile sysext-harness-denied /tmp/sysext-harness-denied {
  /tmp/sysext-harness-denied mr,
  /{usr/,}lib{,32,64}/** mr,
  /etc/ld.so.cache r,
}
"""
FEATURES = ("import json, os; root = '/sys/kernel/security/apparmor'; print(json.dumps("
            "{os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f)).read() "
            "for d, _, fs in os.walk(root + '/features') for f in fs}))")
SCENARIO = """\
description: A confined program is denied a file; the steps pass.
{allow}steps:
  # the kernel's audit thread logs the denial a moment later: wait for it (at most 10 s)
  - run: >-
      /tmp/sysext-harness-denied /etc/hostname ||
      for i in $(seq 20); do journalctl -k -b | grep -q 'apparmor="DENIED"' && break;
      sleep 0.5; done
"""


def _audit_machine(harness, target, workdir: Path) -> Machine:  # type: ignore[no-untyped-def]
    """A cold boot of `target` with the kernel's audit on (the images say audit=0), its
    backlog large enough that no record of the boot is lost before the test's."""
    pool = harness.pool
    workdir.mkdir(parents=True)
    spec = pool.boot_spec(target).with_key(pool.key.public_text, workdir)
    assert spec.kernel is not None and "audit=0" in spec.kernel.cmdline
    spec = dataclasses.replace(spec, kernel=dataclasses.replace(
        spec.kernel,
        cmdline=spec.kernel.cmdline.replace("audit=0", "audit=1 audit_backlog_limit=8192")))
    machine = Machine(spec, workdir, pool.key, pool.accel(spec), backend=pool.backend,
                      name=f"{target.name}-audit")
    machine.boot()
    return machine


def test_an_apparmor_denial_fails_the_run_unless_allowed(harness, target,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    parser = shutil.which("apparmor_parser")
    assert parser, "apparmor_parser is missing: scripts/setup-host.sh installs `apparmor`"
    machine = _audit_machine(harness, target, tmp_path / "machine")
    try:
        features = json.loads(machine.succeed(f'python3 -c "{FEATURES}"'))
        for name, text in features.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        (tmp_path / "profile").write_text(PROFILE)
        policy = subprocess.run([parser, "--skip-kernel-load", "--stdout", "--skip-cache",
                                 "--features-file", str(tmp_path / "features"),
                                 str(tmp_path / "profile")],
                                capture_output=True, check=True, timeout=120).stdout
        (tmp_path / "policy.bin").write_bytes(policy)
        machine.copy_to(tmp_path / "policy.bin", "/tmp/policy.bin")
        # Without auditd the kernel prints audit records through printk_ratelimit(): the
        # boot's own records may use up its burst, and the denial would not be printed.
        machine.succeed("echo 0 > /proc/sys/kernel/printk_ratelimit && "
                        "cat /tmp/policy.bin > /sys/kernel/security/apparmor/.load && "
                        "cp /usr/bin/cat /tmp/sysext-harness-denied")
        for allow in ("", "allow_console: 'apparmor=\"DENIED\".*sysext-harness-denied'\n"):
            path = tmp_path / ("allowed" if allow else "plain") / "denied.yaml"
            path.parent.mkdir()
            path.write_text(SCENARIO.format(allow=allow))
            scenario = load_scenario(path)
            if allow:
                run_scenario(scenario, machine, target, {}, health_check=True)
                continue
            with pytest.raises(AssertionFailed) as err:
                run_scenario(scenario, machine, target, {}, health_check=True)
            message = str(err.value)
            assert "LSM denial (journal): " in message, message
            assert 'profile="sysext-harness-denied"' in message and "/etc/hostname" in message
    finally:
        machine.shutdown()
