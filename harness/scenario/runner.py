"""Runs a scenario's steps on a machine and checks its expectations.

The runner knows nothing about VMs: it drives anything that satisfies `Machine`, which
keeps it testable with a scripted fake and keeps `machine/` free of scenario knowledge.
Failures of the system under test raise AssertionFailed; failures of the harness's own
set-up actions (install, symlink, remove, mkdir) raise HarnessError, so a report can
tell "systemd misbehaved" from "the test could not be set up". What each kind of step
does is its record's handler in `harness.scenario.steps`; this module runs them in order.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from harness.errors import AssertionFailed, ConfigError, ConfigErrors, HarnessError
from harness.scenario.expectations import CommandOutput, Run, format_command
from harness.scenario.health import (
    HEALTH_COMMAND,
    JOURNAL_FILE,
    UnhealthyGuest,
    allowed_count,
    health_findings,
    parse_health_output,
)
from harness.scenario.model import (
    Expectation,
    InstallStep,
    NoVersionMatch,
    Scenario,
    Step,
    TargetLike,
)
from harness.scenario.steps import STEP_KINDS, Channel, Machine, RunnerTarget

if TYPE_CHECKING:
    from harness.extensions.build import Artifact

# Written to the step log (only) after a failed expectation.
DIAGNOSTICS_COMMAND = "systemd-sysext status; systemd-sysext list"


# ------------------------------------------------------------------------ preparation


def resolve_expectations(scenario: Scenario, target: TargetLike) -> dict[int, Expectation]:
    """Every `expect` block of the steps that run on `target`, resolved for its systemd.

    Raises ConfigErrors naming scenario file, step key, expectation key and version when
    a `by_systemd` value has no entry for this target -- before any step runs.
    """
    resolved: dict[int, Expectation] = {}
    errors: list[ConfigError] = []
    for step in scenario.steps:
        expect = getattr(step, "expect", None)
        if expect is None:
            continue
        if step.when is not None and not step.when.holds(target)[0]:
            continue
        try:
            resolved[step.index] = expect.resolve(
                target.systemd_version, f"{step.key}.expect"
            )
        except NoVersionMatch as exc:
            errors.append(ConfigError(
                f"scenario {scenario.name}, {step.label}: no by_systemd entry matches "
                f"systemd {exc.version} of target {target.name}, and there is no default",
                file=scenario.path,
                key=exc.key,
                allowed=", ".join(exc.constraints) + ", or add `default:`",
            ))
    if errors:
        raise ConfigErrors(errors)
    return resolved


def _check_artifacts(
    scenario: Scenario, target: TargetLike, artifacts: Mapping[str, Artifact]
) -> None:
    """Fail before the first step if a step that will run has nothing to install."""
    needed: dict[str, None] = {}
    for step in scenario.steps:
        if isinstance(step, InstallStep) and (step.when is None or step.when.holds(target)[0]):
            needed.setdefault(step.extension, None)
    missing = [n for n in needed if n not in artifacts]
    if missing:
        raise HarnessError(
            f"scenario {scenario.name}: no built artifact for {', '.join(missing)} "
            f"(have: {', '.join(sorted(artifacts)) or 'none'})"
        )


# -------------------------------------------------------------------------- step log


class _StepLog:
    """Plain-text transcript of a run: every command, exit code and output, in order.

    Opened for appending, so other writers of the same file (e.g. a machine logger that
    appends its own lines) interleave with it instead of being overwritten.
    """

    def __init__(self, path: Path | None) -> None:
        self._file = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text.rstrip("\n") + "\n")
            self._file.flush()

    def __enter__(self) -> _StepLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()


# ---------------------------------------------------------------------------- runner


class _Probe:
    """A guest command runner that also carries the run's remembered values."""

    def __init__(self, run: Callable[[str], CommandOutput],
                 remembered: Mapping[str, tuple[str, str]], root: str | None = None) -> None:
        self._run = run
        self.remembered = remembered
        self.root = root  # the tree whose hierarchies `merged` reads (a step's `root:`)

    def __call__(self, command: str) -> CommandOutput:
        return self._run(command)


class _Run:
    """One run of a scenario: the `RunContext` every step handler gets."""

    def __init__(
        self,
        scenario: Scenario,
        machine: Machine,
        target: RunnerTarget,
        artifacts: Mapping[str, Artifact],
        resolved: Mapping[int, Expectation],
        log: _StepLog,
        channel: Channel | None = None,
        certificate: Callable[[], bytes] | None = None,
    ) -> None:
        self.channel = channel
        self.certificate = certificate
        self.scenario = scenario
        self.machine = machine
        self.target = target
        self.artifacts = artifacts
        self.resolved = resolved
        self.log = log
        self.remembered: dict[str, tuple[str, str]] = {}

    def guest(self, command: str, timeout: float) -> CommandOutput:
        """Run a guest command and put it in the step log."""
        result = self.machine.execute(command, timeout=timeout)
        self.log.write(
            format_command(command, result.exit_code, result.stdout, result.stderr, 10**6)
        )
        return result

    def setup(self, step: Step | None, command: str) -> None:
        """A set-up command: failing is a harness error, not an expectation failure."""
        result = self.guest(command, step.timeout if step else 60)
        if result.exit_code != 0:
            what = step.label if step else "set-up"
            raise HarnessError(
                f"{what}: set-up command failed on {self.target.name}\n"
                + format_command(command, result.exit_code, result.stdout, result.stderr)
            )

    def run_step(self, step: Step) -> None:
        """Hand the step to its kind's handler (harness.scenario.steps)."""
        kind = STEP_KINDS.get(step.action)
        if kind is None:  # pragma: no cover - the loader only builds registered kinds
            raise HarnessError(f"{step.label}: unsupported step type {type(step).__name__}")
        kind.run(self, step)

    def probe(self, step: Step) -> Run:
        """The command runner state checks use: same timeout, same log, and what the
        `remember` steps so far kept (`unchanged:`/`changed:` compare with it)."""
        return _Probe(lambda command: self.guest(command, step.timeout), self.remembered,
                      getattr(step, "root", None))

    def remember(self, name: str, command: str, value: str) -> None:
        self.remembered[name] = (command, value)

    def diagnostics(self) -> None:
        """Best effort: record what systemd-sysext sees, to read next to a failure."""
        self.log.write("\n== diagnostics after failure")
        try:
            self.guest(DIAGNOSTICS_COMMAND, 30)
        except Exception as exc:  # the machine may be gone; the failure matters more
            self.log.write(f"(diagnostics failed: {type(exc).__name__}: {exc})")

    def copy_bytes(self, content: bytes, remote: str) -> None:
        """Put `content` at `remote` (mode 0644), logging the copy."""
        with tempfile.TemporaryDirectory(prefix="sysext-harness-copy-") as tmp:
            local = Path(tmp) / "content"
            local.write_bytes(content)
            self.machine.copy_to(local, remote)
        self.setup(None, f"chmod 0644 {shlex.quote(remote)}")

    def install_channel(self) -> None:
        """Transfer files, target directories and (signed channels) the public keyring,
        as a distribution's provisioning would put them in place."""
        assert self.channel is not None
        self.log.write("\n== update channel: transfer files and keys")
        dirs = self.channel.guest_directories()
        if dirs:
            self.setup(None, "mkdir -p " + " ".join(shlex.quote(d) for d in dirs))
        for remote, content in self.channel.guest_files():
            self.log.write(f"(copy {remote})\n" + (
                content.decode() if remote.endswith((".transfer", ".conf")) else ""))
            self.copy_bytes(content, remote)


def _check_health(scenario: Scenario, machine: Machine, log: _StepLog,
                  journal_path: Path | None) -> None:
    """After the steps passed: the guest's journal, failed units, core files and the
    run's serial console must show no badness the scenario does not allow
    (harness.scenario.health); a finding fails the run with its lines. The journal it
    read is kept at `journal_path`, so the run's artifacts need not read it again."""
    log.write("\n== health check (journal of this boot, failed units, core files, console)")
    started = time.monotonic()
    result = machine.execute(HEALTH_COMMAND, timeout=60)
    if result.exit_code != 0:
        raise HarnessError(f"health check: `{HEALTH_COMMAND}` exited {result.exit_code}: "
                           f"{result.stderr.strip()[-500:]}")
    health = parse_health_output(result.stdout)
    if journal_path is not None:
        journal_path.write_text(health.journal)
    console = machine.console_log()
    findings = health_findings(health, console, allow_console=scenario.allow_console,
                               allow_failed_units=scenario.allow_failed_units)
    if findings:
        unhealthy = UnhealthyGuest(findings)
        log.write(f"-- FAILED after {time.monotonic() - started:.1f}s\n{unhealthy}")
        raise unhealthy
    allowed = allowed_count(health, console, scenario.allow_console,
                            scenario.allow_failed_units)
    note = f", {allowed} allowed line(s), unit(s) or file(s)" if allowed else ""
    log.write(f"-- ok ({time.monotonic() - started:.1f}s{note})")


def run_scenario(
    scenario: Scenario,
    machine: Machine,
    target: RunnerTarget,
    artifacts: Mapping[str, Artifact],
    log_path: Path | None = None,
    channel: Channel | None = None,
    certificate: Callable[[], bytes] | None = None,
    *,
    started_after: tuple[int, str] | None = None,
    after_step: Callable[[Step], None] | None = None,
    health_check: bool = False,
) -> None:
    """Run every step in order; raise on the first failing step.

    Steps whose `when:` does not hold are logged as skipped. `applies_to` is not checked
    here: deciding whether to run at all belongs to the caller (it skips, with a reason).
    `started_after` (step index, where from): the machine was started from a state that
    already holds the steps up to that one (harness.scenario.shared_prefix), so they are
    logged as such, not run. `after_step` is called after each step that passed.
    `health_check`: once the steps passed, the guest's journal must hold no badness the
    scenario does not allow (harness.scenario.health); runs on real machines ask for it.
    """
    resolved = resolve_expectations(scenario, target)
    _check_artifacts(scenario, target, artifacts)
    total = len(scenario.steps)
    with _StepLog(log_path) as log:
        log.write(f"# scenario {scenario.name} ({scenario.path})")
        log.write(f"# {scenario.description}")
        log.write(
            f"# target {target.name}: systemd {target.systemd_version}, "
            f"persona {target.persona.name}, machine {machine.name}"
        )
        machine.log(f"scenario {scenario.name}: {scenario.description}")
        run = _Run(scenario, machine, target, artifacts, resolved, log, channel, certificate)
        if channel is not None:
            run.install_channel()
        for step in scenario.steps:
            title = f"step {step.index + 1}/{total} ({step.name or step.summary})"
            if started_after is not None and step.index <= started_after[0]:
                log.write(f"\n== {title}: done in the shared state ({started_after[1]})")
                continue
            if step.when is not None:
                holds, why = step.when.holds(target)
                if not holds:
                    log.write(f"\n== {title}: skipped, {why}")
                    machine.log(f"{title}: skipped, {why}")
                    continue
            log.write(f"\n== {title}")
            started = time.monotonic()
            try:
                with machine.nested(title):
                    run.run_step(step)
            except AssertionFailed as exc:
                log.write(f"-- FAILED after {time.monotonic() - started:.1f}s\n{exc}")
                if log_path is not None:
                    run.diagnostics()
                raise
            except Exception as exc:
                log.write(f"-- ERROR after {time.monotonic() - started:.1f}s: "
                          f"{type(exc).__name__}: {exc}")
                raise
            log.write(f"-- ok ({time.monotonic() - started:.1f}s)")
            if after_step is not None:
                after_step(step)
        if health_check:
            _check_health(scenario, machine, log,
                          log_path.parent / JOURNAL_FILE if log_path is not None else None)
        log.write(f"\n# scenario {scenario.name} passed")
