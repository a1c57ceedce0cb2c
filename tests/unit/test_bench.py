"""`make bench`'s parsing of the guest's own boot figures."""

from __future__ import annotations

from harness.bench import startup_phases


def test_startup_phases_from_systemd_analyze_time() -> None:
    text = ("Startup finished in 1.234s (kernel) + 862ms (initrd) + 1min 2.5s (userspace) "
            "= 1min 4.596s\nmulti-user.target reached after 3.1s in userspace.\n")
    assert startup_phases(text) == {"kernel": 1.23, "initrd": 0.86, "userspace": 62.5}


def test_startup_phases_without_an_initrd() -> None:
    assert startup_phases("Startup finished in 900ms (kernel) + 4.2s (userspace) = 5.1s") \
        == {"kernel": 0.9, "userspace": 4.2}
