"""pytest from the repository root works like in any pytest project: `pytest` runs the
harness's own tests (`testpaths` in pyproject.toml), `pytest scenarios/...` the scenario
suite, with the options of `pytest --help` under "sysext-harness".

The plugin (harness/pytest_plugin.py: the --target/--backend/... options, the scenario
collection, the results matrix) is registered by the installed package's pytest11 entry
point. When that cannot happen (the package is not installed in this interpreter, or
PYTEST_DISABLE_PLUGIN_AUTOLOAD is set), this file loads it instead; loading it twice would
be an error.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points


def _plugin_autoloads() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11"))


pytest_plugins = [] if _plugin_autoloads() else ["harness.pytest_plugin"]
