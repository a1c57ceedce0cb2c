"""The step-kind and expect-key records stay in step with the dataclasses they describe."""

from __future__ import annotations

import textwrap
from dataclasses import fields
from pathlib import Path

from harness.scenario import load_scenario
from harness.scenario.expectations import (
    COMMAND_KEYS,
    EXPECT_KEYS,
    EXPECT_REGISTRY,
    STATE_KEYS,
    CommandKey,
    StateKey,
)
from harness.scenario.model import CommandStep, Expectation
from harness.scenario.steps import (
    ACTIONS,
    BARE_ACTIONS,
    COMMAND_ACTIONS,
    STEP_EXTRA_KEYS,
    STEP_KINDS,
)

# One step per action, written as the docs show it (a new kind needs an example here).
EVERY_ACTION = {
    "install": "install: hello",
    "symlink": "symlink: /etc/extensions/x.raw\n    to: /opt/x.raw",
    "remove": "remove: /etc/extensions/x.raw",
    "mkdir": "mkdir: /run/extensions",
    "write": 'write: /etc/systemd/sysext.conf\n    content: "[SysExt]\\n"',
    "mount": "mount: /usr/share\n    fstype: tmpfs",
    "umount": "umount: /usr/share",
    "move_aside": "move_aside: /opt",
    "remember": 'remember: {opt_mode: "stat -c %a /opt"}',
    "merge": "merge",
    "unmerge": "unmerge",
    "refresh": "refresh",
    "sysext": "sysext: list",
    "confext_merge": "confext_merge:\n    env: {SYSTEMD_LOG_LEVEL: debug}",
    "confext_unmerge": "confext_unmerge",
    "confext_refresh": "confext_refresh: {args: --force}",
    "confext": "confext: status",
    "run": "run: hello",
    "reboot": "reboot",
    "os_update": "os_update",
    "os_rollback": "os_rollback",
    "sysupdate": "sysupdate: update",
    "publish": "publish: {component: hello, version: 1.1.0}",
    "tamper": "tamper: {component: hello, version: 1.1.0}",
    "trust_certificate": "trust_certificate",
    "expect": "expect: {merged: []}",
}


def test_expectation_fields_are_the_expect_keys_in_order() -> None:
    assert tuple(f.name for f in fields(Expectation)) == EXPECT_KEYS
    assert tuple(EXPECT_REGISTRY) == EXPECT_KEYS == COMMAND_KEYS + STATE_KEYS
    assert all(isinstance(EXPECT_REGISTRY[k], CommandKey) for k in COMMAND_KEYS)
    assert all(isinstance(EXPECT_REGISTRY[k], StateKey) for k in STATE_KEYS)


def test_action_tables_derive_from_the_kinds() -> None:
    assert tuple(STEP_KINDS) == ACTIONS
    assert set(EVERY_ACTION) == set(ACTIONS), "give every action an example in EVERY_ACTION"
    assert tuple(a for a in ACTIONS if STEP_KINDS[a].bare) == BARE_ACTIONS
    assert tuple(a for a in ACTIONS if STEP_KINDS[a].command) == COMMAND_ACTIONS
    for action, kind in STEP_KINDS.items():
        assert action in kind.actions
        assert STEP_EXTRA_KEYS[action] == kind.extra_keys
        assert ("expect" in kind.extra_keys) == kind.command


def test_every_kind_parses_a_step_the_runner_dispatches_back_to_it(tmp_path: Path) -> None:
    steps = "".join(f"  - {text}\n" for text in EVERY_ACTION.values())
    path = tmp_path / "every.yaml"
    path.write_text(textwrap.dedent("""\
        description: every action once
        extensions:
          hello:
            files: [{path: /usr/bin/hello, content: "x"}]
        update_channel:
          layout: bakery
          components:
            hello: {versions: [1.0.0, 1.1.0]}
        steps:
        """) + steps)
    scenario = load_scenario(path)
    assert [s.action for s in scenario.steps] == list(EVERY_ACTION)  # step.action finds it
    for step in scenario.steps:
        kind = STEP_KINDS[step.action]
        assert isinstance(step, CommandStep) == kind.command, step.action
