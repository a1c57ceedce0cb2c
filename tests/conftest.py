"""Fixtures for the harness's own tests: real machines from the run's HarnessSession."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.machine.machine import Machine
from harness.pytest_plugin import harness_session, selected_targets
from harness.targets.model import Target


@pytest.fixture(scope="session")
def harness(pytestconfig: pytest.Config):  # type: ignore[no-untyped-def]
    return harness_session(pytestconfig)


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    """The first selected target (``--target``); machine API tests need just one."""
    return selected_targets(pytestconfig)[0]


@pytest.fixture
def machine(harness, target: Target, request: pytest.FixtureRequest) -> Iterator[Machine]:  # type: ignore[no-untyped-def]
    m = harness.machine(target, request.node.name[:40])
    try:
        yield m
    finally:
        harness.pool.stop(m)
