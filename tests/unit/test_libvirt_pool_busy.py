"""A pool refresh waits out another worker's upload instead of failing the machine."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from harness.machine import libvirt_remote
from harness.machine.libvirt_remote import HostStore


class FakeLibvirtError(Exception):
    pass


class BusyPool:
    """Refuses `busy` refreshes the way libvirtd does while a volume upload runs."""

    def __init__(self, busy: int, message: str = "internal error: pool 'sysext-harness' "
                 "has asynchronous jobs running.") -> None:
        self.busy = busy
        self.message = message
        self.refreshes = 0

    def refresh(self, flags: int) -> None:
        self.refreshes += 1
        if self.busy:
            self.busy -= 1
            raise FakeLibvirtError(self.message)


def store() -> HostStore:
    owner = SimpleNamespace(host="h", pid=1, start="s")
    lv: Any = SimpleNamespace(libvirtError=FakeLibvirtError)
    return HostStore("qemu+ssh://h/system", lambda: None, owner, lv)


def test_refresh_waits_while_an_upload_keeps_the_pool_busy(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(libvirt_remote.time, "sleep", lambda s: None)
    pool = BusyPool(busy=3)
    store()._refresh(pool)
    assert pool.refreshes == 4


def test_other_refresh_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libvirt_remote.time, "sleep", lambda s: None)
    pool = BusyPool(busy=1, message="storage pool 'sysext-harness' is not active")
    with pytest.raises(FakeLibvirtError, match="not active"):
        store()._refresh(pool)
    assert pool.refreshes == 1


def test_a_pool_busy_for_too_long_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(libvirt_remote.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(libvirt_remote.time, "sleep", lambda s: None)
    pool = BusyPool(busy=10_000)
    with pytest.raises(FakeLibvirtError, match="asynchronous jobs running"):
        store()._refresh(pool)
    assert pool.refreshes == int(libvirt_remote.POOL_BUSY_TIMEOUT_S // 100) + 1
