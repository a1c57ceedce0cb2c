"""`-n auto`: how many machines fit, from cores and available memory."""

from __future__ import annotations

from harness.machine.capacity import (
    QEMU_OVERHEAD_MB,
    available_memory_mb,
    machines_that_fit,
)
from harness.targets.boot import DEFAULT_MEMORY_MB
from harness.targets.registry import get_target


def test_one_machine_per_core_when_memory_allows() -> None:
    count, why = machines_that_fit([get_target("refos-257-flatcar")], cores=2,
                                   available_mb=16000)
    assert count == 2 and "2 core(s)" in why


def test_memory_caps_the_count_and_one_always_runs() -> None:
    per = DEFAULT_MEMORY_MB + QEMU_OVERHEAD_MB
    targets = [get_target("refos-257-flatcar"), get_target("refos-252-fcos")]
    assert machines_that_fit(targets, cores=8, available_mb=3 * per + 10)[0] == 3
    assert machines_that_fit(targets, cores=8, available_mb=per - 1)[0] == 1


def test_available_memory_reads_memavailable() -> None:
    meminfo = "MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:    2097152 kB\n"
    assert available_memory_mb(meminfo) == 2048


def test_jobs_are_auto_or_a_positive_number() -> None:
    import argparse

    import pytest

    from harness.machine.capacity import parse_jobs, xdist_args

    assert parse_jobs(" auto ") == "auto" and parse_jobs("3") == "3"
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="'auto' or a whole number"):
            parse_jobs(bad)
    assert xdist_args("1") == [] and xdist_args("auto") == ["-n", "auto", "--dist", "loadgroup"]
