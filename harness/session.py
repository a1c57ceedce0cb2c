"""One harness run: run directory, machine pool, artifacts, and running one scenario.

Shared by the pytest plugin and the CLI so both do exactly the same thing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import (
    AssertionFailed,
    ConfigError,
    EmulatorCrashed,
    HarnessError,
    ProvisioningFailed,
    first_line,
)
from harness.extensions.build import Artifact, build_extension
from harness.extensions.signing import VerityKeys, run_keys
from harness.extensions.spec import ExtensionSpec
from harness.machine.backend import Backend
from harness.machine.machine import Machine, Snapshot
from harness.machine.pool import MachinePool
from harness.machine.rundir import RunDir
from harness.paths import cache_dir
from harness.provisioning.http import ArtifactServer
from harness.provisioning.prepare import prepare_boot, stage_served
from harness.scenario import Scenario, run_scenario
from harness.scenario.applicability import installed_on
from harness.scenario.health import JOURNAL_COMMAND, JOURNAL_FILE
from harness.scenario.model import Step
from harness.scenario.shared_prefix import RunPlan, SharedPrefixes, SharedState
from harness.sysupdate.channel import UpdateChannel
from harness.sysupdate.signing import SigningKey
from harness.targets.model import Target

FINAL_STATUS = "systemd-sysext status --json=short"


def _file_logger(path: Path | None) -> Callable[[str], None]:
    """A machine logger that appends its lines to `path` (or drops them)."""
    def log(line: str) -> None:
        if path is not None:
            with open(path, "a") as f:
                f.write(line + "\n")
    return log


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class LazyArtifacts(Mapping[str, Artifact]):
    """A scenario's extensions for one target, each built (or taken from the cache) when a
    step first needs it: an extension used only by a step that does not run on this target
    is never built, so its `host` values need not exist there."""

    def __init__(self, scenario: Scenario, target: Target,
                 keys: Callable[[], VerityKeys] | None = None) -> None:
        self.scenario = scenario
        self.target = target
        self._keys = keys
        self._built: dict[str, Artifact] = {}

    def __getitem__(self, name: str) -> Artifact:
        if name not in self._built:
            self._built[name] = self.build(self.scenario.extensions[name])
        return self._built[name]

    def build(self, spec: ExtensionSpec) -> Artifact:
        """Build (or take from the cache) any spec for this target, e.g. a channel variant."""
        keys = self._keys() if self._keys is not None and spec.ddi else None
        return build_extension(spec, self.target.os_release,
                               architecture=self.target.architecture, cache_dir=cache_dir(),
                               target_label=self.target.name, keys=keys)

    def __contains__(self, name: object) -> bool:
        return name in self.scenario.extensions

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.scenario.extensions)

    def __len__(self) -> int:
        return len(self.scenario.extensions)

    def built(self) -> dict[str, Artifact]:
        return dict(self._built)

    def build_needed(self) -> None:
        """Build now what the steps that run on this target install, so that no machine
        waits, running, while an image is made."""
        for name in installed_on(self.scenario, self.target):
            self[name]  # builds and keeps it


def new_run_directory(artifacts_root: Path, run_name: str | None = None) -> Path:
    """artifacts/run-YYYYmmdd-HHMMSS (or `run_name`, shared by parallel workers), with
    artifacts/latest pointing at it."""
    directory = artifacts_root / (run_name or time.strftime("run-%Y%m%d-%H%M%S"))
    directory.mkdir(parents=True, exist_ok=True)
    latest = artifacts_root / "latest"
    if latest.is_symlink() or not latest.exists():
        tmp = artifacts_root / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(directory.name)
        os.replace(tmp, latest)  # atomic: parallel workers may do this at the same time
    return directory


# QEMU 10's multi-threaded TCG very rarely aborts on its own assertion (about once in 900
# boots here; `emulator_aborted`). The guest had no part in it, so a scenario whose QEMU
# aborted runs once more from its snapshot instead of failing; a second abort fails it.
SCENARIO_ATTEMPTS_ON_EMULATOR_ABORT = 2


@dataclass(frozen=True)
class Attempt:
    """One attempt of a run, for the results matrix: `pass`, `fail` or `emulator-abort`,
    the failure, where its files are (relative to the run directory) and its health-check
    findings."""

    outcome: str
    detail: str
    artifacts: str
    findings: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"outcome": self.outcome, "detail": self.detail[:2000],
                "artifacts": self.artifacts, "findings": list(self.findings)}


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def _findings(exc: HarnessError) -> tuple[str, ...]:
    """The health check's findings a failure carries (UnhealthyGuest), as text."""
    return tuple(f.text() for f in getattr(exc, "findings", ()))


class HarnessSession:
    """Created lazily: nothing boots until the first scenario or machine is asked for."""

    def __init__(self, artifacts_root: Path, run_name: str | None = None, *,
                 backend: Backend | None = None, vcpus: int | None = None) -> None:
        self.artifacts = new_run_directory(artifacts_root, run_name)
        self.run_dir = RunDir()
        # `backend`: the hypervisor machines run on (default QEMU; `--backend libvirt`).
        # `vcpus`: of every machine (harness/machine/vcpus.py); None: each target's own.
        self.pool = MachinePool(self.run_dir.path, artifacts=self.artifacts, backend=backend,
                                vcpus=vcpus)
        self._signing_key: SigningKey | None = None
        self._verity_keys: VerityKeys | None = None
        self.restore_seconds: list[float] = []
        self.scenario_seconds: dict[str, float] = {}
        # Called with a failed run's machine before it stops (`--keep-on-failure`).
        self.on_failure: Callable[[Machine, HarnessError], None] | None = None
        # "scenario::target" -> each attempt of its run (--rerun-failed, emulator aborts)
        self.attempts: dict[str, list[Attempt]] = {}
        # States after a prefix of steps several runs share (harness.scenario.shared_prefix);
        # the caller says which runs are to come (`shared.expect_runs`), else none is saved.
        self.shared = SharedPrefixes(self.run_dir.path)
        atexit.register(self.close)
        # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so machines and overlays go away.
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _raise_interrupt)

    def close(self) -> None:
        self.pool.close()
        if self._signing_key is not None:
            self._signing_key.close()
        self.run_dir.cleanup()

    def signing_key(self) -> SigningKey:
        """The run's GPG key (generated on first use) for signed update channels."""
        if self._signing_key is None:
            self._signing_key = SigningKey(self.run_dir.path / "gnupg")
        return self._signing_key

    def verity_keys(self) -> VerityKeys:
        """The run's verity signing keys (trusted and untrusted), made on first use, or
        the user's pair from $SYSEXT_HARNESS_SIGNING_KEY/_CERT."""
        if self._verity_keys is None:
            self._verity_keys = run_keys(self.run_dir.path / "verity")
        return self._verity_keys

    def build_artifacts(self, scenario: Scenario, target: Target) -> LazyArtifacts:
        return LazyArtifacts(scenario, target, self.verity_keys)

    def machine(self, target: Target, label: str, logfile: Path | None = None,
                snapshot: Snapshot | None = None) -> Machine:
        """A restored machine for a test (from the target's snapshot, or `snapshot`, a later
        state of it); the caller stops it with `pool.stop`."""
        started = time.monotonic()
        self.pool.snapshot(target)  # cold boot (once) is not part of restore time
        restore_start = time.monotonic()
        machine = self.pool.start(target, self.pool.workdir(label),
                                  logger=_file_logger(logfile), snapshot=snapshot)
        self.restore_seconds.append(time.monotonic() - restore_start)
        machine.log(f"ready {time.monotonic() - started:.1f} s after request")
        return machine

    def run(self, scenario: Scenario, target: Target, *, reruns: int = 0) -> Path:
        """Run one scenario on one target; returns its artifact directory. `reruns`: how
        many times a failed run starts again from its snapshot (`--rerun-failed`); what
        each attempt did is kept in `self.attempts` for the results matrix."""
        out = self.artifacts / scenario.name / target.name
        out.mkdir(parents=True, exist_ok=True)
        (out / JOURNAL_FILE).unlink(missing_ok=True)  # an earlier run's, in this directory
        started = time.monotonic()
        artifacts = self.build_artifacts(scenario, target)
        attempts: list[Attempt] = []
        self.attempts[f"{scenario.name}::{target.name}"] = attempts
        aborts = 0
        try:
            while True:
                number = len(attempts) + 1
                try:
                    self._run_once(scenario, target, artifacts, out)
                    attempts.append(Attempt("pass", "", _relative(out, self.artifacts)))
                    break
                except EmulatorCrashed as exc:
                    aborts += 1
                    if aborts == SCENARIO_ATTEMPTS_ON_EMULATOR_ABORT:
                        attempts.append(Attempt("fail", str(exc), _relative(out, self.artifacts)))
                        raise
                    aside = self._set_aside_attempt(out, number, exc)
                    attempts.append(Attempt("emulator-abort", str(exc),
                                            _relative(aside, self.artifacts)))
                    self.pool.progress(
                        f"{scenario.name} on {target.name}: QEMU itself aborted, not the "
                        f"guest; running the scenario again from its snapshot "
                        f"(attempt {number + 1}, first attempt in {aside})")
                except ConfigError:
                    raise
                except HarnessError as exc:
                    failures = sum(1 for a in attempts if a.outcome == "fail")
                    if failures >= reruns:
                        attempts.append(Attempt("fail", str(exc), _relative(out, self.artifacts),
                                                _findings(exc)))
                        raise
                    aside = self._set_aside_attempt(out, number, exc)
                    attempts.append(Attempt("fail", str(exc), _relative(aside, self.artifacts),
                                            _findings(exc)))
                    self.pool.progress(
                        f"{scenario.name} on {target.name} failed; running it again from its "
                        f"snapshot (--rerun-failed {reruns}; attempt {number} kept in {aside}): "
                        f"{first_line(exc) or type(exc).__name__}")
        finally:
            self.shared.done(scenario, target)
            self._write_inputs(out, scenario, target, artifacts)  # records what was built
            self.scenario_seconds[f"{scenario.name}::{target.name}"] = (
                time.monotonic() - started)
        return out

    def _run_once(self, scenario: Scenario, target: Target, artifacts: LazyArtifacts,
                  out: Path) -> None:
        with contextlib.ExitStack() as stack:
            artifacts.build_needed()
            channel = self.serve_channel(scenario, target, artifacts, out, stack)
            if scenario.provisioning is None:
                plan = self.shared.plan(scenario, target)
                start = plan.start
                machine = self.machine(target, f"{scenario.name}-{target.name}",
                                       out / "machine.log",
                                       snapshot=start.snapshot if start else None)
                started_after = None
                if start is not None:
                    started_after = (start.index, f"saved after step {start.index + 1} by "
                                                  f"{start.origin} on this target")
                    machine.log(f"started from the shared state {started_after[1]} "
                                f"(same steps, same extensions up to there)")
                self._run_steps(scenario, target, machine, artifacts, out, channel,
                                started_after=started_after,
                                after_step=self._saver(scenario, machine, plan))
            else:
                self._run_provisioned(scenario, target, artifacts, out, channel)

    def _saver(self, scenario: Scenario, machine: Machine, plan: RunPlan
               ) -> Callable[[Step], None] | None:
        """The `after_step` hook that saves this run's state where later runs share it."""
        if not plan.save_after:
            return None

        def save(step: Step) -> None:
            key = plan.save_after.get(step.index)
            if key is None:
                return
            started = time.monotonic()
            snap = machine.checkpoint(self.shared.directory(key))
            if snap is None:
                return  # the backend cannot run on after saving
            self.shared.keep(key, SharedState(snap, step.index, scenario.name))
            machine.log(f"saved the state after step {step.index + 1} for "
                        f"{self.shared.others_waiting(key)} more run(s) on this target in "
                        f"{time.monotonic() - started:.1f} s (shared prefix)")
        return save

    @staticmethod
    def _set_aside_attempt(out: Path, attempt: int, exc: HarnessError) -> Path:
        """Move a failed attempt's files to out/attempt-N, so the rerun starts clean and
        the evidence stays with the test's artifacts."""
        aside = out / f"attempt-{attempt}"
        aside.mkdir(exist_ok=True)
        for entry in out.iterdir():
            if not entry.name.startswith("attempt-"):
                entry.rename(aside / entry.name)
        name = "emulator-abort.txt" if isinstance(exc, EmulatorCrashed) else "failure.txt"
        (aside / name).write_text(f"{exc}\n")
        return aside

    def serve_channel(self, scenario: Scenario, target: Target, artifacts: LazyArtifacts,
                       out: Path, stack: contextlib.ExitStack) -> UpdateChannel | None:
        """Build and serve the scenario's update channel for the length of the run."""
        if scenario.update_channel is None:
            return None
        root = self.pool.workdir(f"channel-{scenario.name}-{target.name}")
        channel = UpdateChannel(scenario.update_channel, scenario.extensions, target, root,
                                artifacts.build, key=self.signing_key)
        channel.publish_initial()
        server = stack.enter_context(ArtifactServer(root))
        channel.base_url = server.guest_url("")
        stack.callback(lambda: (out / "channel-requests.log").write_text(
            "\n".join(server.requests) + "\n"))
        return channel

    def _run_steps(self, scenario: Scenario, target: Target, machine: Machine,
                   artifacts: Mapping[str, Artifact], out: Path,
                   channel: UpdateChannel | None = None, *,
                   started_after: tuple[int, str] | None = None,
                   after_step: Callable[[Step], None] | None = None) -> None:
        failure: HarnessError | None = None
        try:
            run_scenario(scenario, machine, target, artifacts, log_path=out / "steps.log",
                         channel=channel,
                         certificate=self.certificate,
                         started_after=started_after, after_step=after_step,
                         health_check=True)
        except HarnessError as exc:
            failure = exc
            raise
        finally:
            self._collect(machine, out)
            if failure is not None and self.on_failure is not None and machine.connected:
                self.on_failure(machine, failure)
            self.pool.stop(machine)

    def certificate(self) -> bytes:
        """The run's trusted verity certificate (PEM), for `trust_certificate` steps."""
        return self.verity_keys().trusted.certificate_pem()

    def _run_provisioned(self, scenario: Scenario, target: Target,
                         artifacts: Mapping[str, Artifact], out: Path,
                         channel: UpdateChannel | None = None) -> None:
        """Cold boot with the scenario's first-boot config, served images and all."""
        provisioning = scenario.provisioning
        assert provisioning is not None
        workdir = self.pool.workdir(f"{scenario.name}-{target.name}")
        served = workdir / "served"
        stage_served(provisioning, artifacts, served)
        with ArtifactServer(served) as server:
            inputs = prepare_boot(provisioning, target, artifacts, server,
                                  self.pool.key.public_text, out,
                                  user=self.pool.boot_spec(target).ssh_user)
            machine: Machine | None = None
            try:
                machine = self.pool.boot(target, workdir,
                                         logger=_file_logger(out / "machine.log"),
                                         fw_cfg=inputs.fw_cfg, drives=inputs.drives)
                # Later stages (cloud-config `network`) run after SSH is up: let them finish.
                machine.log(f"boot settled: {machine.settle()}")
                machine.check_provisioning()
            except ProvisioningFailed as exc:
                if machine is not None:
                    self._collect(machine, out)
                    self.pool.stop(machine)
                (out / "provisioning-result.txt").write_text(f"FAILED: {exc.reason}\n")
                self._keep_console(workdir, out)
                if provisioning.expect_failure and provisioning.expect_failure in exc.reason:
                    return  # the failure the scenario asked for
                raise
            finally:
                (out / "http-requests.log").write_text("\n".join(server.requests) + "\n")
            if provisioning.expect_failure:
                self._collect(machine, out)
                self.pool.stop(machine)
                raise AssertionFailed(
                    f"{provisioning.tool} was expected to fail with "
                    f"{provisioning.expect_failure!r}, but it applied the config")
            self._collect_provisioning(machine, out)
            self._run_steps(scenario, target, machine, artifacts, out, channel)

    @staticmethod
    def _keep_console(workdir: Path, out: Path) -> None:
        if (workdir / "console.log").exists():
            shutil.copy(workdir / "console.log", out / "console.log")

    @staticmethod
    def _collect_provisioning(machine: Machine, out: Path) -> None:
        """Keep the guest's own account of provisioning (Ignition's result and log)."""
        for remote, name in (("/etc/.ignition-result.json", "ignition-result.json"),
                             ("/var/log/ignition.log", "ignition.log"),
                             ("/run/sysext-harness/cloud-config-result.json",
                              "cloud-config-result.json")):
            res = machine.execute(f"cat {remote}", timeout=30)
            if res.exit_code == 0:
                (out / name).write_text(res.stdout)

    def _write_inputs(self, out: Path, scenario: Scenario, target: Target,
                      artifacts: Mapping[str, Artifact]) -> None:
        shutil.copy(scenario.path, out / "scenario.yaml")
        info = {
            "target": target.name,
            "systemd_version": target.systemd_version,
            "persona": target.persona.name,
            "os_release": target.os_release,
            "extensions": {
                name: {"path": str(a.path), "format": a.format, "digest": a.digest}
                for name, a in (artifacts.built() if isinstance(artifacts, LazyArtifacts)
                                else artifacts).items()
            },
        }
        (out / "inputs.json").write_text(json.dumps(info, indent=2) + "\n")
        (out / "os-release.yaml").write_text(yaml.safe_dump(target.os_release, sort_keys=False))

    def _collect(self, machine: Machine, out: Path) -> None:
        """Keep what a person needs to understand a failure, even when the guest is broken."""
        try:
            if machine.connected:
                status = machine.execute(FINAL_STATUS, timeout=30)
                (out / "sysext-status.json").write_text(status.stdout or status.stderr)
                if not (out / JOURNAL_FILE).exists():  # the health check keeps its own
                    journal = machine.execute(JOURNAL_COMMAND, timeout=60)
                    (out / JOURNAL_FILE).write_text(journal.stdout)
        except HarnessError as exc:
            (out / "collect-error.txt").write_text(str(exc))
        if machine.console_path.exists():
            shutil.copy(machine.console_path, out / "console.log")


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
