"""Several libvirt hosts as one backend: machines spread over them, one results matrix.

There is no scheduler of our own. pytest-xdist already hands each worker whole targets
(`--dist loadgroup`), so each worker takes its share of the hosts: with W workers and
H hosts, worker k cold-boots on hosts k, k+W, k+2W, ... (round-robin among them), or on
host k mod H when there are fewer hosts than workers. A snapshot lives on the host that
made it, so every restore of it goes there too: a machine's disk placeholder names its
host (`libvirt_remote.RemoteFile.uri`).

A host that stops answering fails the machines that live on it with the reason
(`HostUnreachable`); new cold boots go to the worker's other hosts, then to any host
still answering.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError, MachineError
from harness.machine.backend import Backend, VmConfig
from harness.machine.libvirt_backend import (
    DEFAULT_URI,
    HostUnreachable,
    LibvirtBackend,
    LibvirtVm,
)
from harness.machine.libvirt_remote import read_placeholder
from harness.machine.qemu import QemuBackend

log = logging.getLogger(__name__)

BACKENDS = ("qemu", "libvirt")


def worker_slot() -> tuple[int, int]:
    """(this xdist worker's index, the number of workers); (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if name.startswith("gw") and name[2:].isdigit() and count.isdigit():
        return int(name[2:]), max(int(count), 1)
    return 0, 1


def hosts_for_worker(hosts: int, worker: int, workers: int) -> list[int]:
    """The indices of the hosts worker `worker` of `workers` cold-boots on."""
    if hosts >= workers:
        return list(range(worker % workers, hosts, workers))
    return [worker % hosts]


class LibvirtHosts:
    """A backend over several `LibvirtBackend`s (one per URI)."""

    name = "libvirt"

    def __init__(self, backends: Sequence[LibvirtBackend],
                 slot: tuple[int, int] | None = None) -> None:
        if not backends:
            raise ValueError("LibvirtHosts needs at least one host")
        self.backends = list(backends)
        worker, workers = slot or worker_slot()
        mine = hosts_for_worker(len(self.backends), worker, workers)
        self.preferred = [self.backends[i] for i in mine]
        self._turn = itertools.count()

    @property
    def uris(self) -> list[str]:
        return [b.uri for b in self.backends]

    def _owner(self, path: Path) -> LibvirtBackend | None:
        """The host a placeholder (an overlay, a saved state) lives on, if it is one."""
        placed = read_placeholder(path)
        if placed is None:
            return None
        for backend in self.backends:
            if backend.uri == placed.uri:
                return backend
        raise MachineError(f"{path} is on libvirt host {placed.uri}, which this run "
                           f"does not use ({', '.join(self.uris)})")

    def candidates(self) -> list[LibvirtBackend]:
        """Hosts for a new cold boot, best first: this worker's own in turn, then the
        others; hosts known to be unreachable last (they fail at once)."""
        turn = next(self._turn)
        own = self.preferred[turn % len(self.preferred):] + \
            self.preferred[:turn % len(self.preferred)]
        ordered = own + [b for b in self.backends if b not in own]
        return sorted(ordered, key=lambda b: b.lost is not None)

    def create_overlay(self, path: Path, backing: Path, backing_format: str) -> None:
        owner = self._owner(backing)
        if owner is not None:
            owner.create_overlay(path, backing, backing_format)
            return
        reasons = []
        for backend in self.candidates():
            try:
                backend.create_overlay(path, backing, backing_format)
                return
            except HostUnreachable as exc:
                log.warning("%s; trying another host", exc)
                reasons.append(str(exc))
        raise HostUnreachable("no libvirt host answers:\n" + "\n".join(reasons))

    def vm(self, config: VmConfig, workdir: Path, console: Path) -> LibvirtVm:
        owner = self._owner(config.drives[0].path)
        if owner is None:  # the first drive is not an overlay of ours: any host
            owner = self.candidates()[0]
        return owner.vm(config, workdir, console)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def select_backend(name: str, uris: Sequence[str] | str = DEFAULT_URI) -> Backend:
    """The backend `--backend` names, checked now (ConfigError, exit 2, before any VM).
    Several libvirt URIs make one backend that spreads machines over those hosts."""
    if name == "qemu":
        return QemuBackend()
    if name == "libvirt":
        uri_list = [uris] if isinstance(uris, str) else list(uris) or [DEFAULT_URI]
        backends = [LibvirtBackend(uri) for uri in dict.fromkeys(uri_list)]
        for backend in backends:
            backend.check()
        return backends[0] if len(backends) == 1 else LibvirtHosts(backends)
    raise ConfigError("unknown machine backend", key="--backend", value=name, allowed=BACKENDS)
