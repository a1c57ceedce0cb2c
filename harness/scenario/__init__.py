"""Scenarios: one YAML file describes extensions, steps and expectations.

`load_scenarios()` validates everything up front (ConfigErrors, exit 2);
`run_scenario()` executes the steps against a machine of one target.
"""

from harness.scenario.loader import load_scenario, load_scenarios, scenario_files
from harness.scenario.model import (
    KNOWN_PERSONAS,
    AppliesTo,
    BySystemd,
    CommandStep,
    Condition,
    Expectation,
    ExpectStep,
    InstallStep,
    MkdirStep,
    OsUpdateStep,
    RebootStep,
    RemoveStep,
    RunStep,
    Scenario,
    Step,
    SymlinkStep,
    SysextStep,
)
from harness.scenario.runner import Machine, resolve_expectations, run_scenario

__all__ = [
    "KNOWN_PERSONAS",
    "AppliesTo",
    "BySystemd",
    "CommandStep",
    "Condition",
    "ExpectStep",
    "Expectation",
    "InstallStep",
    "Machine",
    "MkdirStep",
    "OsUpdateStep",
    "RebootStep",
    "RemoveStep",
    "RunStep",
    "Scenario",
    "Step",
    "SymlinkStep",
    "SysextStep",
    "load_scenario",
    "load_scenarios",
    "resolve_expectations",
    "run_scenario",
    "scenario_files",
]
