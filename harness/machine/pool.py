"""Boot each target once per run, keep its ready state, and hand out restored machines.

A cold boot under TCG costs ~20-25 s (QEMU 10); restoring the saved state onto a fresh disk
overlay costs under 2 s. Every scenario therefore starts from a restore of the same clean,
booted target.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from harness.errors import MachineError
from harness.machine.accel import Accel, choose_accel
from harness.machine.backend import Backend
from harness.machine.keys import SshKey, generate_ssh_key
from harness.machine.machine import Machine, Snapshot
from harness.machine.qemu import QemuBackend
from harness.targets.boot import BootSpec, Drive, boot_spec
from harness.targets.model import Target

READY_TIMEOUT = 300.0


def _stderr(message: str) -> None:
    print(f"[machines] {message}", file=sys.stderr, flush=True)


class MachinePool:
    """Per-run owner of target images, snapshots and running machines."""

    def __init__(self, run_dir: Path, *, progress: Callable[[str], None] = _stderr,
                 artifacts: Path | None = None, backend: Backend | None = None,
                 vcpus: int | None = None) -> None:
        self.run_dir = run_dir
        self.backend: Backend = backend or QemuBackend()
        self.progress = progress
        self.artifacts = artifacts
        self.key: SshKey = generate_ssh_key(run_dir / "ssh")
        self.snapshots: dict[str, Snapshot] = {}
        self.boot_seconds: dict[str, float] = {}
        self.snapshot_seconds: dict[str, float] = {}
        self._accel: Accel | None = None
        self._specs: dict[str, BootSpec] = {}
        self._live: list[Machine] = []
        self._counter = itertools.count(1)
        # vCPUs of every machine (harness/machine/vcpus.py); None: each target's own.
        self.vcpus = vcpus

    def boot_spec(self, target: Target) -> BootSpec:
        """How to boot `target` (built first, for reference targets), once per run."""
        if target.name not in self._specs:
            spec = boot_spec(target, progress=self.progress)
            if self.vcpus is not None:
                spec = replace(spec, cpus=self.vcpus)
            self._specs[target.name] = spec
        return self._specs[target.name]

    def accel(self, spec: BootSpec) -> Accel:
        if self._accel is None:
            self._accel = choose_accel(spec.kernel.kernel if spec.kernel else None)
            self.progress(f"accelerator: {self._accel.name} ({self._accel.reason})")
        return self._accel

    def _machine(self, spec: BootSpec, workdir: Path, logger: Callable[[str], None]
                 ) -> Machine:
        return Machine(spec, workdir, self.key, self.accel(spec), backend=self.backend,
                       logger=logger)

    def cold_boot(self, target: Target, workdir: Path,
                  logger: Callable[[str], None] | None = None) -> Machine:
        """A cold-booted, settled machine of `target` with no scenario config: the harness's
        key goes in through the boot spec (fw_cfg for reference images, a first-boot
        config in the distribution's channel for image targets)."""
        workdir.mkdir(parents=True, exist_ok=True)
        spec = self.boot_spec(target).with_key(self.key.public_text, workdir)
        machine = self._machine(spec, workdir, logger or self.progress)
        self._live.append(machine)
        try:
            seconds = machine.boot()
            self.boot_seconds[target.name] = seconds
            self.progress(f"{target.name}: SSH ready after {seconds:.1f} s cold boot")
            self._wait_until_settled(machine)
        except BaseException:
            self._keep_cold_boot_console(machine, target)
            self.stop(machine)
            raise
        return machine

    def _keep_cold_boot_console(self, machine: Machine, target: Target) -> None:
        if self.artifacts is not None and machine.console_path.exists():
            self.artifacts.mkdir(parents=True, exist_ok=True)
            shutil.copy(machine.console_path,
                        self.artifacts / f"cold-boot-{target.name}.console.log")

    def snapshot(self, target: Target) -> Snapshot:
        """The ready state of `target`, cold-booting it the first time it is asked for."""
        if target.name in self.snapshots:
            return self.snapshots[target.name]
        machine = self.cold_boot(target, self.run_dir / f"boot-{target.name}")
        try:
            self._load_snapshot_modules(machine)
            started = time.monotonic()
            snap = machine.snapshot(self.run_dir / f"snapshot-{target.name}")
            self.snapshot_seconds[target.name] = time.monotonic() - started
        finally:
            self._keep_cold_boot_console(machine, target)
            machine.shutdown()
            self._live.remove(machine)
        self.snapshots[target.name] = snap
        return snap

    @staticmethod
    def _load_snapshot_modules(machine: Machine) -> None:
        """Load the modules every merge needs into the state about to be saved: each restored
        run would load them again (`BootSpec.snapshot_modules`). A module the kernel lacks
        is skipped; the merge that needs it then fails as it would anyway."""
        modules = machine.spec.snapshot_modules
        if modules:
            machine.execute(f"for m in {' '.join(modules)}; do modprobe -q $m; done",
                            timeout=READY_TIMEOUT)

    def _wait_until_settled(self, machine: Machine) -> None:
        """Snapshot only a finished boot, and refuse a target whose own units fail."""
        res = machine.execute("systemctl is-system-running --wait", timeout=READY_TIMEOUT)
        state = res.stdout.strip()
        if state != "running":
            failed = machine.execute("systemctl --failed --no-legend --plain").stdout.strip()
            raise MachineError(f"{machine.name}: booted into state {state!r}; "
                               f"failed units:\n{failed or '(none listed)'}")

    def start(self, target: Target, workdir: Path,
              logger: Callable[[str], None] | None = None,
              snapshot: Snapshot | None = None) -> Machine:
        """A fresh machine of `target`, restored from its snapshot (or from `snapshot`, a
        later state of the same target saved by `Machine.checkpoint`)."""
        snap = snapshot or self.snapshot(target)
        started = time.monotonic()
        machine = Machine.restore(snap, workdir, self.key, backend=self.backend,
                                  logger=logger or self.progress)
        where = f" on {machine.vm.where}" if machine.vm is not None and machine.vm.where else ""
        machine.log(f"restored from snapshot in {time.monotonic() - started:.1f} s{where}")
        self._live.append(machine)
        return machine

    def boot(self, target: Target, workdir: Path, logger: Callable[[str], None] | None = None,
             *, fw_cfg: Mapping[str, Path] | None = None,
             drives: Sequence[Drive] = ()) -> Machine:
        """A cold-booted machine with first-boot provisioning (no snapshot can hold it):
        `fw_cfg` entries and `drives` carry the config, which also installs the SSH key."""
        spec = self.boot_spec(target).provisioned(fw_cfg or {}, tuple(drives))
        machine = self._machine(spec, workdir, logger or self.progress)
        self._live.append(machine)
        try:
            seconds = machine.boot()
        except BaseException:
            self._live.remove(machine)
            machine.shutdown()
            raise
        machine.log(f"cold boot with provisioning: SSH after {seconds:.1f} s")
        return machine

    def stop(self, machine: Machine) -> None:
        machine.shutdown()
        if machine in self._live:
            self._live.remove(machine)
        shutil.rmtree(machine.workdir, ignore_errors=True)

    def release(self, target: Target) -> None:
        """Drop a target's snapshot once no more scenarios need it (saves disk)."""
        snap = self.snapshots.pop(target.name, None)
        if snap is not None:
            shutil.rmtree(snap.disk.parent, ignore_errors=True)

    def workdir(self, label: str) -> Path:
        return self.run_dir / f"m{next(self._counter):03d}-{label}"

    def close(self) -> None:
        for machine in list(self._live):
            machine.shutdown()
        self._live.clear()
        self.backend.close()
