"""Which targets a scenario runs on, and, for the others, why not.

The scenario's own `applies_to:` first, then what the scenario needs that a target may
lack: the first-boot provisioning its persona takes, a systemd-sysupdate binary. The
pytest plugin, the CLI and the docs ask here; none of them decides on its own.
"""

from __future__ import annotations

from typing import Protocol

from harness.scenario.model import InstallStep, OsUpdateStep, Scenario, Step, TargetLike


class _Persona(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def provisioning(self) -> str: ...  # "ignition" or "cloud-config"


class _Base(Protocol):
    @property
    def suite(self) -> str: ...

    @property
    def sysupdate(self) -> bool: ...  # the image ships systemd-sysupdate


class ApplicabilityTarget(TargetLike, Protocol):
    """What deciding applicability needs from a target (`harness.targets.model.Target`)."""

    @property
    def persona(self) -> _Persona: ...

    @property
    def base(self) -> _Base: ...

    @property
    def kind(self) -> str: ...  # "reference" or "image"


def applicability(scenario: Scenario, target: ApplicabilityTarget) -> tuple[bool, str]:
    """(True, "") or (False, why the scenario cannot run on the target)."""
    ok, reason = scenario.applies_to.applies(target)
    if not ok:
        return ok, reason
    prov = scenario.provisioning
    if prov is not None and prov.kind != target.persona.provisioning:
        return False, (f"provisioned with {prov.kind}; persona {target.persona.name} takes "
                       f"{target.persona.provisioning}")
    if scenario.uses_sysupdate and not target.base.sysupdate:
        what = (f"{target.base.suite}'s systemd {target.systemd_version}"
                if target.kind == "reference" else f"image target {target.name}")
        return False, f"uses systemd-sysupdate, which {what} does not ship"
    if target.kind == "image" and prov is not None and prov.expect_failure:
        return False, ("expects first-boot provisioning to fail, which only reference "
                       "targets report (a console line of theirs); on an image target it is "
                       "a failed boot")
    if target.kind == "image" and any(isinstance(s, OsUpdateStep)
                                      for s in steps_on(scenario, target)):
        return False, ("switches to the next OS release, which only reference targets can "
                       "do so far (their /usr slot B); image targets cannot run OS updates yet")
    return True, ""


def steps_on(scenario: Scenario, target: TargetLike) -> tuple[Step, ...]:
    """The steps that run on `target`: those without a `when:`, or whose `when:` holds."""
    return tuple(s for s in scenario.steps if s.when is None or s.when.holds(target)[0])


def installed_on(scenario: Scenario, target: TargetLike) -> tuple[str, ...]:
    """Extensions an `install` step that runs on `target` uses, in first-use order: these
    must be built for it (and nothing else need be: its `host` values may not exist)."""
    names: dict[str, None] = {}
    for step in steps_on(scenario, target):
        if isinstance(step, InstallStep):
            names.setdefault(step.extension, None)
    return tuple(names)
