"""Scratch space for one run (disk overlays, saved VM states, SSH keys).

It lives in the cache directory, not in /tmp, because saved states are large. It is removed
when the run ends; if a run was killed outright, the next run removes what it left.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from harness.paths import cache_dir


def _owner_alive(entry: Path) -> bool:
    pid = entry.name.split("-", 1)[0]
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def sweep_stale_runs(base: Path) -> list[Path]:
    """Remove run directories whose process is gone; returns what was removed."""
    removed = []
    if base.is_dir():
        for entry in base.iterdir():
            if entry.is_dir() and not _owner_alive(entry):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


class RunDir:
    """A per-process directory under <cache>/runs, removed by `cleanup()`."""

    def __init__(self, base: Path | None = None, label: str = "") -> None:
        self.base = base or cache_dir() / "runs"
        self.base.mkdir(parents=True, exist_ok=True)
        sweep_stale_runs(self.base)
        name = f"{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.path = self.base / (f"{name}-{label}" if label else name)
        self.path.mkdir(mode=0o700)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
