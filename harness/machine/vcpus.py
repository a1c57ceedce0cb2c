"""How many vCPUs each machine gets: no more than the host's cores can run at once.

Under TCG every vCPU is a host thread that runs flat out while its guest works. Two machines
with two vCPUs each on a 2-core host (`JOBS=2`) put four busy threads on two cores: the
host preempts a vCPU in the middle of guest work (holding a guest lock, which the other
vCPU then spins on), and the guest's second CPU only adds that contention. Measured with
the 114 scenario runs of `make test-scenario TARGET='refos-252-*' JOBS=2` on 2 cores: two
vCPUs each took 347 s and 615 s of CPU time, one vCPU each 287 s and 479 s. A machine that
has the host to itself (`JOBS=1`) keeps two vCPUs: its boots run partly in parallel.

`auto` (the default) therefore gives each machine the host's cores divided by the machines
that run at once (the pytest-xdist workers), at least 1 and at most DEFAULT_VCPUS. Machines
on remote libvirt hosts keep DEFAULT_VCPUS: this host's cores say nothing about theirs.
"""

from __future__ import annotations

import os

from harness.errors import ConfigError

DEFAULT_VCPUS = 2
AUTO = "auto"
LOCAL_LIBVIRT_URIS = ("qemu:///system", "qemu:///session")


def host_cores() -> int:
    """The cores this process may run on (a CPU affinity or cgroup-pinned CI runner has
    fewer than the machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_vcpus(machines_at_once: int, cores: int) -> int:
    """vCPUs per machine when `machines_at_once` machines share `cores` host cores."""
    return max(1, min(DEFAULT_VCPUS, cores // max(1, machines_at_once)))


def parse_vcpus(value: str, *, source: str = "--vcpus") -> int | None:
    """`auto` -> None (decided per run), else a whole number of at least 1."""
    text = value.strip()
    if text == AUTO:
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError("not a number of vCPUs per machine", key=source, value=value,
                      allowed=f"'{AUTO}' or a whole number of at least 1")


def vcpus_for_run(choice: int | None, *, machines_at_once: int,
                  remote_hosts: bool = False, cores: int | None = None) -> tuple[int, str]:
    """The vCPUs every machine of this run gets, and why (for the run's log)."""
    if choice is not None:
        return choice, "as asked (--vcpus)"
    if remote_hosts:
        return DEFAULT_VCPUS, "the default: machines run on remote libvirt hosts"
    cores = cores or host_cores()
    vcpus = auto_vcpus(machines_at_once, cores)
    return vcpus, f"auto: {cores} host core(s), {machines_at_once} machine(s) at once"


def remote_libvirt(uris: list[str]) -> bool:
    """Whether any of these libvirt connections leads to another host."""
    return any(uri not in LOCAL_LIBVIRT_URIS for uri in uris)
