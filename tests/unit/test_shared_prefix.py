"""Shared prefixes (harness/scenario/shared_prefix.py): which runs share the state after a
reboot, and when a run saves or starts from it. Pure logic: no VM, snapshots are stand-ins."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, cast

import pytest

from harness.machine.machine import Snapshot
from harness.scenario import load_scenario
from harness.scenario.model import Scenario
from harness.scenario.shared_prefix import SharedPrefixes, SharedState, boundaries
from harness.targets.registry import get_target

PREFIX = """
extensions:
  a:
    release: {ID: _any}
    files: [{path: /usr/share/a/marker, content: "%(content)s"}]
steps:
  - install: a
  - merge
    %(merge_name)s
  - expect:
      merged: [a]
  - os_update
  - expect:
      merged: [a]
  - os_rollback
  - sysext: list
"""


def _scenario(tmp_path: Path, name: str, body: str = PREFIX, **values: str) -> Scenario:
    fields = {"content": "x\\n", "merge_name": ""} | values
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"description: {name}\n" + textwrap.dedent(body % fields))
    return load_scenario(path)


def test_equal_steps_share_a_key_names_and_when_aside(tmp_path: Path) -> None:
    target = get_target("refos-257-flatcar")
    first = boundaries(_scenario(tmp_path, "one"), target)
    named = PREFIX.replace("  - merge\n", "  - merge:\n    name: merge it\n"
                           "    when: {personas: [flatcar]}\n")
    second = boundaries(_scenario(tmp_path, "two", named), target)
    assert [b.index for b in first] == [3, 5]  # after os_update and after os_rollback
    assert [b.key for b in first] == [b.key for b in second]


def test_other_content_target_or_steps_make_other_keys(tmp_path: Path) -> None:
    target = get_target("refos-257-flatcar")
    base = boundaries(_scenario(tmp_path, "base"), target)
    content = boundaries(_scenario(tmp_path, "content", content="y\\n"), target)
    other_target = boundaries(_scenario(tmp_path, "base2"), get_target("refos-252-flatcar"))
    steps = boundaries(_scenario(tmp_path, "steps", PREFIX.replace(
        "      merged: [a]\n  - os_update", "      merged: []\n  - os_update")), target)
    for other in (content, other_target, steps):
        assert other[0].key != base[0].key


def test_a_prefix_stops_at_harness_side_state(tmp_path: Path) -> None:
    remember = PREFIX.replace("  - merge\n", "  - merge\n  - remember:\n"
                              "      n: cat /etc/machine-id\n")
    assert boundaries(_scenario(tmp_path, "remember", remember),
                      get_target("refos-257-flatcar")) == []


def test_steps_that_do_not_run_on_the_target_are_left_out(tmp_path: Path) -> None:
    only_fcos = PREFIX.replace("  - merge\n", "  - merge\n  - run: touch /etc/x\n"
                               "    when: {personas: [fcos]}\n")
    flatcar = get_target("refos-257-flatcar")
    assert (boundaries(_scenario(tmp_path, "fcos-step", only_fcos), flatcar)[0].key
            == boundaries(_scenario(tmp_path, "plain"), flatcar)[0].key)


def _state(tmp_path: Path, origin: str, index: int) -> SharedState:
    return SharedState(cast(Snapshot, object()), index, origin)


def test_plan_saves_only_for_runs_to_come_and_starts_from_the_longest(tmp_path: Path) -> None:
    target = get_target("refos-257-flatcar")
    one, two = _scenario(tmp_path, "one"), _scenario(tmp_path, "two")
    alone = _scenario(tmp_path, "alone", content="other\\n")
    shared = SharedPrefixes(tmp_path / "run")
    shared.expect_runs([(one, target), (two, target), (alone, target)])
    first, second = boundaries(one, target)

    plan = shared.plan(one, target)  # both boundaries are wanted by `two` as well
    assert plan.start is None and plan.save_after == {3: first.key, 5: second.key}
    assert shared.plan(alone, target).save_after == {}  # nobody else wants its states

    shared.keep(first.key, _state(tmp_path, "one", 3))
    shared.keep(second.key, _state(tmp_path, "one", 5))
    shared.directory(second.key).mkdir(parents=True)
    shared.done(one, target)
    plan = shared.plan(two, target)
    assert plan.start is not None and (plan.start.index, plan.start.origin) == (5, "one")
    assert plan.save_after == {}
    shared.done(two, target)  # the last run that wanted them: the states go
    assert shared.saved == {} and not shared.directory(second.key).exists()


def test_provisioned_or_channel_scenarios_share_nothing(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "p")
    fake: Any = type("S", (), {"provisioning": object(), "update_channel": None,
                               "steps": scenario.steps})()
    assert boundaries(fake, get_target("refos-257-flatcar")) == []


@pytest.mark.parametrize(("name", "targets"), [
    ("pinned-dropped-after-update", ("refos-257-flatcar", "refos-252-fcos")),
    ("rollback-restores", ("refos-257-flatcar", "refos-252-fcos", "refos-254-kairos")),
    ("kairos-pinned-survives-update", ("refos-254-kairos",)),
])
def test_the_update_scenarios_share_their_os_update(name: str, targets: tuple[str, ...]
                                                    ) -> None:
    """The update scenarios are written to share the state after `os_update`: keep them in
    step, or each pays its own reboot again."""
    root = Path(__file__).resolve().parents[2] / "scenarios" / "updates"
    reference = load_scenario(root / "level-and-any-survive-update.yaml")
    for target_name in targets:
        target = get_target(target_name)
        assert (boundaries(load_scenario(root / f"{name}.yaml"), target)[0].key
                == boundaries(reference, target)[0].key)
