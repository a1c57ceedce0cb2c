"""`pytest` from the repository root finds the plugin even when entry points do not load."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.paths import project_root


def _collect(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "scenarios/merge/merge-squashfs.yaml", "--target", "refos-257-flatcar"],
        cwd=project_root(), env=env, capture_output=True, text=True, timeout=120)


def test_scenarios_collect_with_and_without_plugin_autoload() -> None:
    for env in ({}, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        proc = _collect(env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "scenarios/merge/merge-squashfs.yaml::refos-257-flatcar" in proc.stdout
        assert "warning" not in proc.stdout.lower(), proc.stdout
