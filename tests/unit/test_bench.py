"""`make bench`'s parsing of the guest's own boot figures."""

from __future__ import annotations

import json
from pathlib import Path

from harness.bench import run_kinds, startup_phases


def test_startup_phases_from_systemd_analyze_time() -> None:
    text = ("Startup finished in 1.234s (kernel) + 862ms (initrd) + 1min 2.5s (userspace) "
            "= 1min 4.596s\nmulti-user.target reached after 3.1s in userspace.\n")
    assert startup_phases(text) == {"kernel": 1.23, "initrd": 0.86, "userspace": 62.5}


def test_startup_phases_without_an_initrd() -> None:
    assert startup_phases("Startup finished in 900ms (kernel) + 4.2s (userspace) = 5.1s") \
        == {"kernel": 0.9, "userspace": 4.2}


def test_run_kinds_tells_booted_runs_from_snapshot_runs(tmp_path: Path) -> None:
    logs = {
        ("merge", "t1"): "[t1] restored from snapshot in 0.5 s\n[t1] ready 0.5 s after request\n",
        ("first", "t1"): "[t1] restored from snapshot in 0.6 s\n[t1] ready 20.1 s after request\n",
        ("update", "t1"): "[t1] ready 0.5 s after request\n[t1]   reboot (sync, then reset)\n",
        ("provision", "t1"): "[t1] cold boot with provisioning: SSH after 12.0 s\n",
        ("broken", "t1"): "[t1] restored from snapshot in 0.5 s\n",
    }
    seconds = {"merge": 2.0, "first": 22.0, "update": 12.0, "provision": 14.0, "broken": 9.0}
    for (scenario, target), text in logs.items():
        (tmp_path / scenario / target).mkdir(parents=True)
        (tmp_path / scenario / target / "machine.log").write_text(text)
    results = {name: {"t1": {"outcome": "fail" if name == "broken" else "pass",
                             "seconds": secs}} for name, secs in seconds.items()}
    results["merge"]["t2"] = {"outcome": "n/a", "detail": "not here"}
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"results": results}))
    assert run_kinds(matrix) == {"suite_snapshot_runs": 1, "suite_snapshot_run_avg_s": 2.0,
                                 "suite_boot_runs": 3, "suite_boot_run_avg_s": 16.0}
    assert run_kinds(tmp_path / "missing.json") == {}


def test_group_costs_sum_the_runs_of_each_scenario_directory(tmp_path: Path) -> None:
    from harness.bench import group_costs

    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"results": {
        "partitions": {"refos-262-fcos": {"outcome": "pass", "seconds": 50.0},
                       "refos-257-fcos": {"outcome": "fail", "seconds": 30.5},
                       "refos-252-fcos": {"outcome": "n/a", "detail": "needs 254"}},
        "cleanup": {"refos-262-fcos": {"outcome": "pass", "seconds": 3.2}},
        "merge-squashfs": {"refos-262-fcos": {"outcome": "pass", "seconds": 2.0}},
    }}))
    costs = group_costs(matrix)
    assert costs["sysupdate-tool"] == {"runs": 3, "seconds": 83.7}
    assert costs["merge"] == {"runs": 1, "seconds": 2.0}
