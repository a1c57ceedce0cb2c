"""pytest plugin: scenario YAML files become test items, one per (scenario, target).

``pytest scenarios/ --target 'refos-257-*' -k merge --junitxml=report.xml`` works as pytest
users expect. Targets a scenario does not apply to are deselected, and the reasons are
listed at the end of the run. Machines, images and snapshots come from one
`HarnessSession`, created only when the first VM is needed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from harness.errors import ConfigError, HarnessError
from harness.report import Matrix
from harness.scenario import Scenario, load_scenario
from harness.targets.model import Target
from harness.targets.registry import select_targets

_SESSION = pytest.StashKey["object"]()
_NOT_APPLICABLE = pytest.StashKey[list]()
_MATRIX = pytest.StashKey[Matrix]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sysext-harness")
    group.addoption("--target", action="append", default=[], metavar="PATTERN",
                    help="run on targets matching these glob patterns (repeat or "
                         "comma-separate); default: every default reference target")
    group.addoption("--artifacts", default="artifacts", metavar="DIR",
                    help="where per-test artifacts go (default: ./artifacts)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots real virtual machines")
    config.addinivalue_line("markers", "scenario: a scenario YAML run on a target")
    config.stash[_NOT_APPLICABLE] = []
    config.stash[_MATRIX] = Matrix()


def selected_targets(config: pytest.Config) -> list[Target]:
    try:
        return select_targets(config.getoption("--target") or None)
    except ConfigError as exc:
        pytest.exit(f"error: {exc}", returncode=2)


def harness_session(config: pytest.Config):  # type: ignore[no-untyped-def]
    """The run's HarnessSession, created on first use."""
    from harness.session import HarnessSession

    if _SESSION not in config.stash:
        root = Path(config.getoption("--artifacts"))
        if not root.is_absolute():
            root = Path(config.rootpath) / root
        config.stash[_SESSION] = HarnessSession(root)
    return config.stash[_SESSION]


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector):  # type: ignore[no-untyped-def]
    if file_path.suffix in (".yaml", ".yml") and "scenarios" in file_path.parts:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """One scenario file; validated completely before any VM starts."""

    def collect(self):  # type: ignore[no-untyped-def]
        scenario = load_scenario(self.path)
        for target in selected_targets(self.config):
            item = ScenarioItem.from_parent(self, name=target.name, scenario=scenario,
                                            target=target)
            item.add_marker("vm")
            item.add_marker("scenario")
            for tag in scenario.tags:
                self.config.addinivalue_line("markers", f"{tag}: scenario tag")
                item.add_marker(tag)
            yield item

    def repr_failure(self, excinfo):  # type: ignore[no-untyped-def]
        if isinstance(excinfo.value, ConfigError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, target: Target, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.scenario = scenario
        self.target = target
        self.extra_keyword_matches.update(
            {scenario.name, target.persona.name, f"systemd{target.systemd_version}"})

    def runtest(self) -> None:
        session = harness_session(self.config)
        out = session.run(self.scenario, self.target)
        self.user_properties.append(("artifacts", str(out)))

    def repr_failure(self, excinfo):  # type: ignore[no-untyped-def]
        if isinstance(excinfo.value, HarnessError):
            return f"{self.scenario.name} on {self.target.name}:\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):  # type: ignore[no-untyped-def]
        return self.path, None, f"{self.scenario.name} on {self.target.name}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Deselect not-applicable pairs, and group scenario items by target (one snapshot each)."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    if any(isinstance(i, ScenarioItem) for i in items):
        config.stash[_MATRIX].targets = [t.name for t in selected_targets(config)]
    for item in items:
        if isinstance(item, ScenarioItem):
            ok, reason = item.scenario.applies_to.applies(item.target)
            prov = item.scenario.provisioning
            if ok and prov is not None and prov.kind != item.target.persona.provisioning:
                ok, reason = False, (f"provisioned with {prov.kind}; persona "
                                     f"{item.target.persona.name} takes "
                                     f"{item.target.persona.provisioning}")
            if not ok:
                dropped.append(item)
                config.stash[_NOT_APPLICABLE].append((item.nodeid, reason))
                config.stash[_MATRIX].add(item.scenario.name, item.target.name, "n/a", reason)
                continue
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    target_order = {t.name: i for i, t in enumerate(selected_targets(config))}
    others = [i for i in keep if not isinstance(i, ScenarioItem)]
    scenario_items = [i for i in keep if isinstance(i, ScenarioItem)]
    scenario_items.sort(key=lambda i: target_order.get(i.target.name, 0))  # stable
    items[:] = others + scenario_items


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record each scenario item's outcome in the matrix."""
    item_info = getattr(report, "_sysext_harness", None)
    if item_info is None:
        return
    matrix, scenario, target = item_info
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "pass" if report.passed else ("skip" if report.skipped else "fail")
        detail = "" if report.passed else str(report.longrepr)[:2000]
        matrix.add(scenario, target, outcome, detail)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    if isinstance(item, ScenarioItem):
        report = outcome.get_result()
        report._sysext_harness = (item.config.stash[_MATRIX], item.scenario.name,
                                  item.target.name)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Free a target's snapshot after its last scenario of the run."""
    if not isinstance(item, ScenarioItem) or _SESSION not in item.config.stash:
        return
    if isinstance(nextitem, ScenarioItem) and nextitem.target.name == item.target.name:
        return
    item.config.stash[_SESSION].pool.release(item.target)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    na = config.stash.get(_NOT_APPLICABLE, [])
    if na:
        terminalreporter.section("not applicable (deselected)")
        by_reason: dict[str, list[str]] = defaultdict(list)
        for nodeid, reason in na:
            by_reason[reason].append(nodeid)
        for reason, nodes in by_reason.items():
            terminalreporter.write_line(f"{reason}:")
            for node in nodes:
                terminalreporter.write_line(f"    {node}")
    session = config.stash.get(_SESSION, None)
    matrix = config.stash.get(_MATRIX, None)
    if matrix is not None and matrix.cells:
        terminalreporter.section("results matrix")
        terminalreporter.write_line(matrix.text())
        if session is not None:
            md, js = matrix.write(session.artifacts)
            terminalreporter.write_line(f"written to {md} and {js}")
    if session is not None:
        terminalreporter.section("sysext-harness")
        for name, secs in session.pool.boot_seconds.items():
            terminalreporter.write_line(f"cold boot {name}: {secs:.1f} s to SSH")
        if session.restore_seconds:
            avg = sum(session.restore_seconds) / len(session.restore_seconds)
            terminalreporter.write_line(
                f"snapshot restores: {len(session.restore_seconds)}, average {avg:.1f} s")
        terminalreporter.write_line(f"artifacts: {session.artifacts}")
