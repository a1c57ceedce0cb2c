"""How many machines fit on this host at once: `-n auto` / `JOBS=auto`.

Every machine is a QEMU process with a fixed guest memory (a reference target's BootSpec
default, an image target's `memory_mb`) plus QEMU's own overhead, and under TCG every
machine wants a core. `auto` starts as many machines as there are cores, but never more
than the memory the host has available can hold, and always at least one.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from harness.machine.vcpus import AUTO, host_cores
from harness.targets.boot import DEFAULT_MEMORY_MB
from harness.targets.model import Target

# What one QEMU process needs besides its guest's memory: the TCG translation cache the
# harness sizes with tb-size=128 (MiB), and QEMU's own heap and device state. Counted on
# top of the full guest memory, which a busy guest can touch entirely (a restored
# refos-262 machine had a resident set of 308 MiB of its 1024 right after restoring).
QEMU_OVERHEAD_MB = 320


def machine_memory_mb(target: Target) -> int:
    """The guest memory one machine of `target` gets, without booting or building it."""
    if target.image is not None:
        return target.image.memory_mb
    return DEFAULT_MEMORY_MB


def available_memory_mb(meminfo: str | None = None) -> int:
    """MemAvailable from /proc/meminfo, in MiB (what can be used without swapping)."""
    if meminfo is None:
        with open("/proc/meminfo") as f:
            meminfo = f.read()
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise ValueError("/proc/meminfo has no MemAvailable line")


def machines_that_fit(targets: Iterable[Target], *, cores: int | None = None,
                      available_mb: int | None = None) -> tuple[int, str]:
    """(machines at once, why): one per core, as many as the largest machine of the run
    fits into the available memory, and at least one."""
    cores = cores or host_cores()
    available = available_memory_mb() if available_mb is None else available_mb
    largest = max((machine_memory_mb(t) for t in targets), default=DEFAULT_MEMORY_MB)
    per_machine = largest + QEMU_OVERHEAD_MB
    by_memory = available // per_machine
    count = max(1, min(cores, by_memory))
    why = (f"{cores} core(s), {available} MiB available, {per_machine} MiB per machine "
           f"(guest + QEMU)")
    return count, why



def parse_jobs(value: str) -> str:
    """A `--jobs` value for pytest-xdist's `-n`: `auto` or a whole number of at least 1
    (argparse type: a bad value is a usage error, exit 2)."""
    text = value.strip()
    if text == AUTO or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"{value!r}: expected 'auto' or a whole number of at least 1")


def xdist_args(jobs: str) -> list[str]:
    """The pytest arguments that run `jobs` machines at once (none for one)."""
    return [] if jobs == "1" else ["-n", jobs, "--dist", "loadgroup"]
