"""Shared prefixes: runs on one target whose steps begin alike share the state after a reboot.

A reboot or OS update is the dearest step under TCG (about 15 s of a run with two machines
on two cores), and several update scenarios begin with the same steps up to the same reboot
(install, merge, check, `os_update`). The first such run on a target saves its machine right
after that step (`Machine.checkpoint`) and runs on; the others start from that state instead
of repeating the steps, then run their own steps from there.

The key is the content: the target, and every step up to the boundary as that target runs it
(its kind and every field but its name, index, `when` and timeout), with the whole spec of
each extension an `install` step puts in. Equal keys mean the same commands with the same
inputs, started from the same snapshot, so the same state; the expectations of those steps
were checked by the run that saved it, and the step log of a run that started from it says
which run that was. A prefix that keeps values on the harness's side (`remember`, and the
checks that compare with them) or depends on a served update channel or a first-boot config
is never shared. docs/targets.md ("Faster paths") describes this for users.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.machine.machine import Snapshot
from harness.scenario.model import (
    ChannelStep,
    CommandStep,
    ExpectStep,
    InstallStep,
    OsUpdateStep,
    RebootStep,
    RememberStep,
    Scenario,
    Step,
    SysupdateStep,
    TargetLike,
)

# A shared prefix ends right after one of these: what a run saves by starting later.
BOUNDARY_STEPS: tuple[type[Step], ...] = (RebootStep, OsUpdateStep)
# Steps whose effect is not all in the guest: a prefix stops before the first of them.
UNSHAREABLE_STEPS: tuple[type[Step], ...] = (RememberStep, SysupdateStep, ChannelStep)
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


@dataclass(frozen=True)
class Boundary:
    """A step after which a run's state may be shared, and the key of the steps up to it."""

    index: int  # the step's index in the scenario
    key: str


def _canonical(value: Any) -> Any:
    """A JSON-able form of a step or spec that equal values share, whatever their order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"@": type(value).__name__,
                **{f.name: _canonical(getattr(value, f.name))
                   for f in dataclasses.fields(value) if f.compare}}  # not where written
    if isinstance(value, Mapping):
        items = [[_canonical(k), _canonical(v)] for k, v in value.items()]
        return sorted(items, key=lambda kv: json.dumps(kv, sort_keys=True))
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return _ADDRESS.sub("", repr(value))  # e.g. a sentinel default: its type is what counts


def _compares_remembered(step: Step) -> bool:
    expect = step.expect if isinstance(step, (CommandStep, ExpectStep)) else None
    return expect is not None and (expect.unchanged is not None or expect.changed is not None)


def _fingerprint(step: Step, scenario: Scenario) -> Any:
    bare = dataclasses.replace(step, index=0, name=None, when=None, timeout=0.0)
    doc: dict[str, Any] = {"step": _canonical(bare)}
    if isinstance(step, InstallStep):
        doc["extension"] = _canonical(scenario.extensions[step.extension])
    return doc


def boundaries(scenario: Scenario, target: TargetLike) -> list[Boundary]:
    """The steps of `scenario` on `target` after which its state may be shared, in order,
    each with the key of everything up to it."""
    if scenario.provisioning is not None or scenario.update_channel is not None:
        return []
    parts: list[Any] = [target.name]
    found: list[Boundary] = []
    for step in scenario.steps:
        if step.when is not None and not step.when.holds(target)[0]:
            continue
        if isinstance(step, UNSHAREABLE_STEPS) or _compares_remembered(step):
            break
        parts.append(_fingerprint(step, scenario))
        if isinstance(step, BOUNDARY_STEPS):
            blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
            found.append(Boundary(step.index, hashlib.sha256(blob.encode()).hexdigest()))
    return found


@dataclass(frozen=True)
class SharedState:
    """A saved state after a shared prefix: where it ends and which run saved it."""

    snapshot: Snapshot
    index: int  # the last step it includes
    origin: str  # the scenario whose run saved it


@dataclass
class RunPlan:
    """How one run uses shared prefixes: where it starts, and after which steps it saves."""

    start: SharedState | None = None
    save_after: dict[int, str] = field(default_factory=dict)  # step index -> key


class SharedPrefixes:
    """The session's shared states: how many runs still want each key, and those saved."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.wanted: Counter[str] = Counter()
        self.saved: dict[str, SharedState] = {}
        self._boundaries: dict[tuple[str, str], list[Boundary]] = {}

    def _of(self, scenario: Scenario, target: TargetLike) -> list[Boundary]:
        """`boundaries` of a run, worked out once per session (counted, planned, done)."""
        run = (str(scenario.path), target.name)
        if run not in self._boundaries:
            self._boundaries[run] = boundaries(scenario, target)
        return self._boundaries[run]

    def expect_runs(self, runs: Iterable[tuple[Scenario, TargetLike]]) -> None:
        """Count the runs the session will make (the collected, applicable pairs)."""
        for scenario, target in runs:
            self.wanted.update(b.key for b in self._of(scenario, target))

    def plan(self, scenario: Scenario, target: TargetLike) -> RunPlan:
        """Start from the longest saved prefix of this run; save after a later boundary
        that another run still to come shares."""
        found = self._of(scenario, target)
        plan = RunPlan()
        for boundary in reversed(found):
            if boundary.key in self.saved:
                plan.start = self.saved[boundary.key]
                break
        after = plan.start.index if plan.start is not None else -1
        plan.save_after = {b.index: b.key for b in found
                           if b.index > after and self.wanted[b.key] >= 2
                           and b.key not in self.saved}
        return plan

    def keep(self, key: str, state: SharedState) -> None:
        self.saved[key] = state

    def directory(self, key: str) -> Path:
        return self.root / f"shared-{key[:16]}"

    def others_waiting(self, key: str) -> int:
        return self.wanted[key] - 1

    def done(self, scenario: Scenario, target: TargetLike) -> None:
        """A run ended (however): drop the states no run still to come wants."""
        for boundary in self._of(scenario, target):
            self.wanted[boundary.key] -= 1
            if self.wanted[boundary.key] <= 0 and boundary.key in self.saved:
                del self.saved[boundary.key]
                shutil.rmtree(self.directory(boundary.key), ignore_errors=True)
