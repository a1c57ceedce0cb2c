"""vCPUs per machine: `auto` never puts more vCPU threads on the host than it has cores."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.machine.vcpus import (
    DEFAULT_VCPUS,
    auto_vcpus,
    parse_vcpus,
    remote_libvirt,
    vcpus_for_run,
)


@pytest.mark.parametrize(("machines", "cores", "expected"), [
    (1, 2, 2),   # alone on 2 cores: both vCPUs run
    (2, 2, 1),   # JOBS=2 on 2 cores: one core each
    (3, 2, 1),   # never fewer than one
    (1, 1, 1),
    (2, 8, 2),   # never more than the default
    (4, 8, 2),
    (0, 2, 2),   # no worker count known: as if alone
])
def test_auto_divides_the_cores(machines: int, cores: int, expected: int) -> None:
    assert auto_vcpus(machines, cores) == expected


def test_parse() -> None:
    assert parse_vcpus("auto") is None
    assert parse_vcpus(" 3 ") == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_parse_refuses_with_key_value_and_allowed(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_vcpus(bad)
    text = str(caught.value)
    assert "--vcpus" in text and repr(bad) in text and "'auto'" in text
    assert caught.value.exit_code == 2


def test_run_choice() -> None:
    assert vcpus_for_run(3, machines_at_once=2, cores=2)[0] == 3  # asked for: kept
    vcpus, why = vcpus_for_run(None, machines_at_once=2, cores=2)
    assert vcpus == 1 and "2 host core(s)" in why and "2 machine(s)" in why
    vcpus, why = vcpus_for_run(None, machines_at_once=2, cores=2, remote_hosts=True)
    assert vcpus == DEFAULT_VCPUS and "remote" in why


def test_remote_libvirt() -> None:
    assert not remote_libvirt([])
    assert not remote_libvirt(["qemu:///system", "qemu:///session"])
    assert remote_libvirt(["qemu:///system", "qemu+ssh://root@lab1/system"])
