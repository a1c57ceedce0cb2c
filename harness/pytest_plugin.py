"""pytest plugin: scenario YAML files become test items, one per (scenario, target).

``pytest scenarios/ --target 'refos-257-*' -k merge --junitxml=report.xml`` works as pytest
users expect. Targets a scenario does not apply to are deselected, and the reasons are
listed at the end of the run. Machines, images and snapshots come from one
`HarnessSession` per process, created only when the first VM is needed.

With pytest-xdist (`-n 2`) workers write into the same run directory, and the controller
builds the results matrix from the reports and what workers send back. Items carry an
`xdist_group` marker per target, so `--dist loadgroup` keeps a target on one worker and
its snapshot is made once. (pytest-xdist 3.8 adds the group to node ids in a way pytest 9
ignores, hence `pytest<9` in pyproject.toml.)
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.errors import ConfigError, HarnessError
from harness.known_failures import (
    FILE_NAME as KNOWN_FAILURES_FILE,
)
from harness.known_failures import (
    KnownFailures,
    can_go_warnings,
    judge_failure,
    judge_pass,
    load_known_failures,
)
from harness.report import Matrix
from harness.scenario import Scenario, load_scenario
from harness.scenario.applicability import applicability
from harness.targets.model import Target
from harness.targets.selection import select_targets

if TYPE_CHECKING:
    from harness.machine.backend import Backend
    from harness.machine.machine import Machine
    from harness.session import HarnessSession

_SESSION = pytest.StashKey["HarnessSession"]()
# (nodeid, scenario, target, reason) of every deselected pair: listed at the end of a run,
# put in the matrix, and sent by xdist workers to the controller.
_NOT_APPLICABLE = pytest.StashKey[list]()
_MATRIX = pytest.StashKey[Matrix]()
_RUN_NAME = pytest.StashKey[str]()
_WORKER_STATS = pytest.StashKey[list]()
_TARGETS = pytest.StashKey[list]()
_BACKEND = pytest.StashKey["Backend"]()
_VCPUS = pytest.StashKey[tuple]()  # (vCPUs per machine, why)
# (scenario, target) of every run to come, for shared prefixes (harness/scenario/shared_prefix)
_RUNS = pytest.StashKey[list]()
_KNOWN = pytest.StashKey["KnownFailures"]()
_TODAY = pytest.StashKey[date]()  # one day for the whole run, also across midnight
# user_properties keys that carry a run's cell from a worker's report to the controller:
# (scenario, target), the outcome when it is not pytest's own (flaky, known), the attempts
# (Attempt.as_json) and a note (an expired or superfluous known-failures entry)
_CELL = "sysext_harness_cell"
_OUTCOME = "sysext_harness_outcome"
_ATTEMPTS = "sysext_harness_attempts"
_NOTE = "sysext_harness_note"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sysext-harness")
    group.addoption("--target", action="append", default=[], metavar="PATTERN",
                    help="run on targets matching these glob patterns (repeat or "
                         "comma-separate); default: every default reference target")
    group.addoption("--image", default=None, metavar="PATH",
                    help="also run on this disk image (qcow2 or raw; .bz2/.xz/.gz are "
                         "unpacked once), booted through its distribution's own "
                         "provisioning; needs --persona")
    group.addoption("--persona", default=None, metavar="flatcar|fcos|kairos",
                    help="the distribution of --image: its provisioning channel, user and "
                         "extension directories")
    group.addoption("--firmware", default="uefi", metavar="uefi|bios",
                    help="firmware that boots --image (default: uefi)")
    group.addoption("--artifacts", default="artifacts", metavar="DIR",
                    help="where per-test artifacts go (default: ./artifacts)")
    group.addoption("--backend", default="qemu", metavar="qemu|libvirt",
                    help="what runs the VMs: QEMU processes of our own (default) or "
                         "transient libvirt domains (docs/libvirt.md)")
    group.addoption("--libvirt-uri", action="append", default=[], metavar="URI",
                    help="the libvirt connection for --backend libvirt (default: "
                         "qemu:///system); repeat it to spread the targets over several "
                         "hosts, e.g. qemu+ssh://root@lab1/system")
    group.addoption("--no-shared-prefixes", action="store_true", default=False,
                    help="run every step of every run, even where runs on one target share "
                         "their steps up to a reboot (by default the first saves the state "
                         "after it and the others start there; docs/targets.md)")
    group.addoption("--tap", default=None, metavar="FILE",
                    help="also write the results matrix as TAP version 13 to FILE "
                         "(one test point per scenario x target; docs/cli.md)")
    group.addoption("--rerun-failed", default=0, type=int, metavar="N",
                    help="run a failed scenario again from its snapshot up to N times; one "
                         "that then passes is reported as flaky, never as a pass (default 0; "
                         "make test-scenario: 1)")
    group.addoption("--known-failures", default=None, metavar="FILE",
                    help="failures the maintainers know about (docs/known-failures.md); "
                         "default: known-failures.yaml in the root directory if it exists")
    group.addoption("--keep-on-failure", action="store_true", default=False,
                    help="keep a failed run's machine running, print the ssh command for it "
                         "and wait until it is powered off or Ctrl-C (at most 1 hour); "
                         "one machine at a time, so not with -n")
    group.addoption("--vcpus", default="auto", metavar="auto|N",
                    help="vCPUs per machine (default: auto, the host's cores divided by "
                         "the machines at once, 1 or 2; docs/targets.md)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots real virtual machines")
    config.addinivalue_line(
        "markers",
        "toolbox: builds DDIs with the cached Debian trixie toolbox (systemd-repart 257); "
        "the first run bootstraps it with mmdebstrap (about 30 s)",
    )
    config.addinivalue_line("markers", "scenario: a scenario YAML run on a target")
    if not config.pluginmanager.hasplugin("xdist"):  # it marks every item (loadgroup)
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's worker group")
    config.stash[_NOT_APPLICABLE] = []
    config.stash[_MATRIX] = Matrix()
    config.stash[_WORKER_STATS] = []
    if _is_worker(config):
        config.stash[_RUN_NAME] = config.workerinput["sysext_harness_run"]  # type: ignore[attr-defined]
    else:
        config.stash[_RUN_NAME] = time.strftime("run-%Y%m%d-%H%M%S")
    if not _is_worker(config):
        config.pluginmanager.register(_MatrixRecorder(config), "sysext_harness_matrix")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "sysext_harness_xdist")
    config.stash[_BACKEND] = _checked_backend(config)
    config.stash[_VCPUS] = _checked_vcpus(config)
    config.stash[_KNOWN] = _checked_known_failures(config)
    config.stash[_TODAY] = date.today()
    if config.getoption("--keep-on-failure") and _xdist_workers(config) > 1:
        pytest.exit("error: --keep-on-failure: waits for you at a failed run, so it runs one "
                    "machine at a time; drop -n (JOBS=1)", returncode=2)
    if config.getoption("--rerun-failed") < 0:
        pytest.exit("error: --rerun-failed: must be 0 or more (got "
                    f"{config.getoption('--rerun-failed')})", returncode=2)


def _checked_known_failures(config: pytest.Config) -> KnownFailures:
    """`--known-failures FILE` (it must exist), else the root's known-failures.yaml if
    there is one; checked before any VM starts: a bad entry exits 2."""
    given = config.getoption("--known-failures")
    path = Path(given) if given else Path(config.rootpath) / KNOWN_FAILURES_FILE
    try:
        return load_known_failures(path, required=bool(given))
    except ConfigError as exc:
        pytest.exit(f"error: {exc}", returncode=2)


def _checked_backend(config: pytest.Config) -> Backend:
    """The `--backend`, checked before any VM starts: bad input exits 2."""
    from harness.machine.libvirt_backend import DEFAULT_URI
    from harness.machine.libvirt_hosts import select_backend

    try:
        return select_backend(config.getoption("--backend"),
                              config.getoption("--libvirt-uri") or [DEFAULT_URI])
    except ConfigError as exc:
        pytest.exit(f"error: {exc}", returncode=2)


def _checked_vcpus(config: pytest.Config) -> tuple[int, str]:
    """`--vcpus`, checked before any VM starts, and what `auto` means in this process."""
    from harness.machine.libvirt_hosts import worker_slot
    from harness.machine.vcpus import parse_vcpus, remote_libvirt, vcpus_for_run

    try:
        choice = parse_vcpus(config.getoption("--vcpus"))
    except ConfigError as exc:
        pytest.exit(f"error: {exc}", returncode=2)
    remote = (config.getoption("--backend") == "libvirt"
              and remote_libvirt(config.getoption("--libvirt-uri")))
    # A worker knows the worker count from xdist's environment; the controller (which
    # only reports the choice) from -n.
    workers = worker_slot()[1] if _is_worker(config) else _xdist_workers(config)
    return vcpus_for_run(choice, machines_at_once=workers, remote_hosts=remote)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (`JOBS=auto`): as many machines as the host's cores and available memory
    hold (harness/machine/capacity.py), not xdist's one worker per CPU."""
    from harness.machine.capacity import machines_that_fit

    try:
        targets = _targets_asked_for(config)  # not resolved: nothing boots to count them
    except ConfigError as exc:
        pytest.exit(f"error: {exc}", returncode=2)
    count, why = machines_that_fit(targets)
    print(f"machines at once: {count} (auto: {why})", flush=True)
    return count


def _xdist_workers(config: pytest.Config) -> int:
    value = getattr(config.option, "numprocesses", None)
    return value if isinstance(value, int) and value > 0 else 1


class _MatrixRecorder:
    """Records each scenario item's outcome in the matrix. Runs where reports end up: in
    the controller under xdist (the cell travels in the report's user_properties)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        cell = props.get(_CELL)
        if not isinstance(cell, list | tuple):  # a list once it has crossed from a worker
            return
        scenario, target = str(cell[0]), str(cell[1])
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = _matrix_outcome(report, props)
            detail = "" if report.passed else (
                str(getattr(report, "wasxfail", "")) if outcome == "known"
                else str(report.longrepr))[:2000]
            attempts, note = props.get(_ATTEMPTS), props.get(_NOTE)
            self.config.stash[_MATRIX].add(
                scenario, target, outcome, detail, seconds=report.duration,
                attempts=list(attempts) if isinstance(attempts, list | tuple) else None,
                note=str(note) if note else None)


def _matrix_outcome(report: pytest.TestReport, props: dict) -> str:
    """pass, flaky (failed, then passed on a rerun), known (a failure known-failures.yaml
    lists: pytest's xfail), skip or fail."""
    if report.passed:
        return "flaky" if props.get(_OUTCOME) == "flaky" else "pass"
    if report.skipped:
        return "known" if hasattr(report, "wasxfail") else "skip"
    return "fail"


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, tuple[str, dict]] | None:
    """A flaky run is not a plain pass on the terminal either: `R` and FLAKY."""
    if report.when == "call" and report.passed and \
            dict(report.user_properties).get(_OUTCOME) == "flaky":
        return "flaky", "R", ("FLAKY", {"yellow": True})
    return None


class _XdistHooks:
    """Registered only when pytest-xdist is installed (its hooks exist only then)."""

    def pytest_configure_node(self, node) -> None:  # type: ignore[no-untyped-def]
        node.workerinput["sysext_harness_run"] = node.config.stash[_RUN_NAME]

    def pytest_testnodedown(self, node, error) -> None:  # type: ignore[no-untyped-def]
        out = getattr(node, "workeroutput", {}).get("sysext_harness")
        if not out:
            return
        config = node.config
        for cell in map(tuple, out["not_applicable"]):
            if cell not in config.stash[_NOT_APPLICABLE]:
                config.stash[_NOT_APPLICABLE].append(cell)
                _, scenario, target, reason = cell
                config.stash[_MATRIX].add(scenario, target, "n/a", reason)
        config.stash[_MATRIX].targets = out["targets"]
        config.stash[_WORKER_STATS].append(out)


def _targets_asked_for(config: pytest.Config) -> list[Target]:
    """The targets the --target/--image/--persona/--firmware options name, unresolved."""
    return select_targets(config.getoption("--target") or None,
                          image=config.getoption("--image"),
                          persona=config.getoption("--persona"),
                          firmware=config.getoption("--firmware"))


def selected_targets(config: pytest.Config) -> list[Target]:
    """The run's targets, once per process. Image targets are booted once to learn what
    they are (cached by image digest), since applicability depends on it."""
    if _TARGETS not in config.stash:
        from harness.machine.probe import resolve

        try:
            config.stash[_TARGETS] = [resolve(t) for t in _targets_asked_for(config)]
        except ConfigError as exc:
            pytest.exit(f"error: {exc}", returncode=2)
        except HarnessError as exc:  # an image that does not boot or answer
            pytest.exit(f"error: {exc}", returncode=1)
    return config.stash[_TARGETS]


def harness_session(config: pytest.Config) -> HarnessSession:
    """The run's HarnessSession, created on first use."""
    from harness.session import HarnessSession

    if _SESSION not in config.stash:
        root = _artifacts_dir(config).parent
        vcpus, why = config.stash[_VCPUS]
        config.stash[_SESSION] = HarnessSession(root, config.stash[_RUN_NAME],
                                                backend=config.stash[_BACKEND], vcpus=vcpus)
        config.stash[_SESSION].pool.progress(f"{vcpus} vCPU(s) per machine ({why})")
        if not config.getoption("--no-shared-prefixes"):
            runs: list = config.stash.get(_RUNS, [])
            config.stash[_SESSION].shared.expect_runs(runs)
        if config.getoption("--keep-on-failure"):
            config.stash[_SESSION].on_failure = lambda machine, failure: _hold(
                config, machine, failure)
    return config.stash[_SESSION]


def _hold(config: pytest.Config, machine: Machine, failure: BaseException) -> None:
    """`--keep-on-failure`: talk to the person directly, past pytest's output capture."""
    from harness.debug import hold_for_debugging

    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def write(text: str) -> None:
        if reporter is not None:
            reporter.write(text)
            reporter.flush()
        else:
            print(text, end="", flush=True)

    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        hold_for_debugging(machine, failure, write)


def _artifacts_dir(config: pytest.Config) -> Path:
    root = Path(config.getoption("--artifacts"))
    if not root.is_absolute():
        root = Path(config.rootpath) / root
    return root / config.stash[_RUN_NAME]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker sends the controller what it alone knows: n/a pairs and machine timings."""
    config = session.config
    if not _is_worker(config):
        return
    harness = config.stash.get(_SESSION, None)
    config.workeroutput["sysext_harness"] = {  # type: ignore[attr-defined]
        "targets": config.stash[_MATRIX].targets,
        "not_applicable": config.stash[_NOT_APPLICABLE],
        "boot_seconds": dict(harness.pool.boot_seconds) if harness else {},
        "restore_seconds": list(harness.restore_seconds) if harness else [],
    }


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()
    backend = config.stash.get(_BACKEND, None)
    if backend is not None:
        backend.close()  # this run's volumes on remote libvirt hosts


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
            # One target, one worker: its snapshot is made once (`--dist loadgroup`).
            item.add_marker(pytest.mark.xdist_group(target.name))
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
            {scenario.name, target.persona.name, f"systemd{target.systemd_version}",
             target.kind})

    def runtest(self) -> None:
        config = self.config
        session = harness_session(config)
        names = (self.scenario.name, self.target.name)
        known, today = config.stash[_KNOWN], config.stash[_TODAY]
        try:
            out = session.run(self.scenario, self.target,
                              reruns=config.getoption("--rerun-failed"))
        except ConfigError:
            raise
        except HarnessError as exc:
            self._record_attempts(session)
            outcome, note = judge_failure(known, *names, today)
            if outcome == "known":
                self.user_properties.append((_OUTCOME, "known"))
                pytest.xfail(f"{note}\n{exc}")
            if note:  # an expired entry matched: the failure counts, and says why
                self.user_properties.append((_NOTE, note))
            raise
        self.user_properties.append(("artifacts", str(out)))
        attempts = self._record_attempts(session)
        if any(a.outcome == "fail" for a in attempts):
            self.user_properties.append((_OUTCOME, "flaky"))
        warning = judge_pass(known, *names, today)
        if warning:
            self.user_properties.append((_NOTE, warning))
            warnings.warn(pytest.PytestWarning(warning), stacklevel=1)

    def _record_attempts(self, session: HarnessSession) -> list:
        """Put the run's attempts (more than one after a rerun) into the report."""
        attempts = session.attempts.get(f"{self.scenario.name}::{self.target.name}", [])
        if len(attempts) > 1:
            self.user_properties.append((_ATTEMPTS, [a.as_json() for a in attempts]))
        return attempts

    def repr_failure(self, excinfo):  # type: ignore[no-untyped-def]
        if isinstance(excinfo.value, HarnessError):
            note = dict(self.user_properties).get(_NOTE)  # an expired known-failures entry
            return (f"{self.scenario.name} on {self.target.name}:\n{excinfo.value}"
                    + (f"\n{note}" if note else ""))
        return super().repr_failure(excinfo)

    def reportinfo(self):  # type: ignore[no-untyped-def]
        return self.path, None, f"{self.scenario.name} on {self.target.name}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Deselect not-applicable pairs, and group scenario items by target (one snapshot each).

    Runs after `-k`/`-m` have deselected theirs, so a narrowed run lists only the n/a pairs
    the user asked about.
    """
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    if any(isinstance(i, ScenarioItem) for i in items):
        config.stash[_MATRIX].targets = [t.name for t in selected_targets(config)]
    for item in items:
        if isinstance(item, ScenarioItem):
            ok, reason = applicability(item.scenario, item.target)
            if not ok:
                dropped.append(item)
                config.stash[_NOT_APPLICABLE].append(
                    (item.nodeid, item.scenario.name, item.target.name, reason))
                config.stash[_MATRIX].add(item.scenario.name, item.target.name, "n/a", reason)
                continue
            item.user_properties.append((_CELL, (item.scenario.name, item.target.name)))
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    target_order = {t.name: i for i, t in enumerate(selected_targets(config))}
    others = [i for i in keep if not isinstance(i, ScenarioItem)]
    scenario_items: list[pytest.Item] = [i for i in keep if isinstance(i, ScenarioItem)]
    scenario_items.sort(key=lambda i: target_order.get(i.target.name, 0))  # type: ignore[attr-defined]
    items[:] = others + scenario_items
    config.stash[_RUNS] = [(i.scenario, i.target) for i in scenario_items]  # type: ignore[attr-defined]


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
        for nodeid, _scenario, _target, reason in na:
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
        md, js = matrix.write(_artifacts_dir(config))
        terminalreporter.write_line(f"written to {md} and {js}")
    if matrix is not None and not _is_worker(config):
        runs = [(name, target, cell["outcome"] == "pass")
                for name, row in matrix.cells.items() for target, cell in row.items()
                if cell["outcome"] != "n/a"]
        for line in can_go_warnings(config.stash[_KNOWN], runs):
            terminalreporter.write_line(f"warning: {line}", yellow=True)
    tap = config.getoption("--tap", None)
    if tap and not _is_worker(config):
        Path(tap).write_text((matrix or Matrix()).tap())
        terminalreporter.write_line(f"TAP written to {tap}")
    boots: dict[str, float] = {}
    restores: list[float] = []
    for stats in [*config.stash.get(_WORKER_STATS, []),
                  *([{"boot_seconds": session.pool.boot_seconds,
                      "restore_seconds": session.restore_seconds}] if session else [])]:
        boots.update(stats["boot_seconds"])
        restores += stats["restore_seconds"]
    if boots or restores:
        terminalreporter.section("sysext-harness")
        vcpus, why = config.stash[_VCPUS]
        terminalreporter.write_line(f"vCPUs per machine: {vcpus} ({why})")
        for name, secs in boots.items():
            terminalreporter.write_line(f"cold boot {name}: {secs:.1f} s to SSH")
        if restores:
            avg = sum(restores) / len(restores)
            terminalreporter.write_line(
                f"snapshot restores: {len(restores)}, average {avg:.1f} s")
        terminalreporter.write_line(f"artifacts: {_artifacts_dir(config)}")
