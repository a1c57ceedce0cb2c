"""`sysext-harness shell --until`: which steps run before the shell opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.debug import steps_until
from harness.errors import ConfigError
from harness.scenario import load_scenario


def test_until_takes_a_step_number_or_name_and_refuses_others(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("description: d\nsteps:\n  - run: 'true'\n    name: first\n"
                    "  - run: 'true'\n  - run: 'true'\n    name: third\n")
    scenario = load_scenario(path)
    assert len(steps_until(scenario, None).steps) == 3
    assert len(steps_until(scenario, "2").steps) == 2
    assert [s.name for s in steps_until(scenario, "third").steps][-1] == "third"
    for bad in ("0", "4", "second"):
        with pytest.raises(ConfigError) as err:
            steps_until(scenario, bad)
        assert "--until" in str(err.value) and "1-3" in str(err.value)
        assert "first, third" in str(err.value)
