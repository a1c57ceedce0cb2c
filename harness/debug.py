"""Looking inside a machine by hand: after a failed run (`--keep-on-failure`) or on purpose
(`sysext-harness shell`).

Both keep the machine of a run alive and print the exact `ssh` command for it (the run's
key, its loopback port, its pinned host key). The machine still belongs to the run: it
stops when the person says so (Ctrl-C, or `poweroff` in the guest) or after a bounded
time, and the run cleans up as always, so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import subprocess
import time
from collections.abc import Callable

from harness.errors import ConfigError, HarnessError, first_line
from harness.machine.machine import Machine
from harness.scenario import Scenario, run_scenario
from harness.session import HarnessSession
from harness.targets.model import Target

# How long a kept machine waits for the person at most (`--keep-on-failure`).
KEEP_LIMIT_SECONDS = 3600.0


def _stopped(machine: Machine) -> bool:
    return machine.vm is None or not machine.vm.running()


def hold_for_debugging(machine: Machine, failure: BaseException,
                       write: Callable[[str], None],
                       limit: float = KEEP_LIMIT_SECONDS) -> None:
    """Print how to log in to a failed run's machine, then wait until it is powered off,
    Ctrl-C is pressed here, or `limit` seconds have passed."""
    argv = machine.ssh_command()
    first = first_line(failure) or type(failure).__name__
    write(f"\n--keep-on-failure: {machine.name} failed: {first}\n"
          f"its machine is kept running; log in with:\n  {shlex.join(argv)}\n"
          f"stop it with `poweroff` in the guest or Ctrl-C here (the run then goes on); "
          f"it stops by itself after {limit / 60:.0f} min\n")
    deadline = time.monotonic() + limit
    with contextlib.suppress(KeyboardInterrupt):
        while not _stopped(machine) and time.monotonic() < deadline:
            time.sleep(0.5)
    write(f"--keep-on-failure: {machine.name} "
          f"{'was powered off' if _stopped(machine) else 'is stopped now'}\n")


def steps_until(scenario: Scenario, until: str | None) -> Scenario:
    """The scenario cut after the step `until` names: its number (from 1) or its name."""
    if until is None:
        return scenario
    names = [s.name for s in scenario.steps]
    if until.isdigit() and 1 <= int(until) <= len(scenario.steps):
        count = int(until)
    elif until in names:
        count = names.index(until) + 1
    else:
        raise ConfigError("no such step", key="--until", value=until,
                          allowed=f"a step number 1-{len(scenario.steps)}"
                                  + (f" or a step name: {', '.join(n for n in names if n)}"
                                     if any(names) else ""))
    return dataclasses.replace(scenario, steps=scenario.steps[:count])


def shell_scenario(scenario: Scenario | None, until: str | None) -> Scenario | None:
    """The steps `shell` runs before it opens (`--scenario`, `--until`), checked before
    anything starts: bad input leaves nothing behind."""
    if scenario is None:
        if until is not None:
            raise ConfigError("--until needs --scenario", key="--until", value=until)
        return None
    if scenario.provisioning is not None:
        raise ConfigError("a scenario with provisioning: cold-boots with its own config, "
                          "which `shell` does not do yet", key="--scenario",
                          value=str(scenario.path),
                          allowed="a scenario that starts from the target's snapshot")
    return steps_until(scenario, until)


def open_shell(session: HarnessSession, target: Target, *, scenario: Scenario | None = None,
               command: str | None = None, write: Callable[[str], None] = print) -> int:
    """Start a machine of `target` (restored from its snapshot), run `scenario`'s steps
    (see `shell_scenario`), then open an interactive SSH session in it (or run `command`
    there). Returns the shell's (or command's) exit code; the machine stops afterwards."""
    name = scenario.name if scenario is not None else "shell"
    out = session.artifacts / name / target.name
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        machine = session.machine(target, f"shell-{target.name}", out / "machine.log")
        stack.callback(session.pool.stop, machine)
        if scenario is not None:
            artifacts = session.build_artifacts(scenario, target)
            artifacts.build_needed()
            channel = session.serve_channel(scenario, target, artifacts, out, stack)
            write(f"running {len(scenario.steps)} step(s) of {scenario.name} "
                  f"(log: {out / 'steps.log'})")
            try:
                run_scenario(scenario, machine, target, artifacts, log_path=out / "steps.log",
                             channel=channel, certificate=session.certificate)
            except HarnessError as exc:
                write(f"the steps failed, the shell opens anyway: {exc}")
        argv = machine.ssh_command()
        if command is not None:
            return subprocess.run([*argv, command], check=False).returncode
        write(f"{target.name}: logging in with\n  {shlex.join(argv)}\n"
              f"(the machine stops when this shell ends)")
        return subprocess.run(["ssh", "-t", *argv[1:]], check=False).returncode
