"""Which cached image directories running harness processes still use.

A target's images are rebuilt when its recipe changes, and the build removes the older
directories of that target. Another harness process (a second checkout, a run started
before the recipe was edited) may still boot from one of them: its machines' overlays
point at those files. Each process therefore holds a shared `flock` on `DIR/.in-use` of
every image directory it uses, until it exits; a build removes an older directory only
when it can take that lock exclusively, and otherwise leaves it for a later build.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path
from typing import IO

IN_USE_FILE = ".in-use"

# Open lock files of the directories this process uses; closed when the process exits.
_held: dict[Path, IO[str]] = {}


def hold(directory: Path, marker: str = "manifest.json") -> bool:
    """Mark `directory` as used by this process. False if it is gone or incomplete (no
    `marker`), e.g. removed by another process just before the lock was taken."""
    if directory in _held:
        return True
    try:
        lock = open(directory / IN_USE_FILE, "a")  # noqa: SIM115 - held until exit
    except FileNotFoundError:
        return False
    except PermissionError:  # a cache this user may read but not write: usable, unguarded
        return (directory / marker).exists()
    fcntl.flock(lock, fcntl.LOCK_SH)
    if not (directory / marker).exists():
        lock.close()
        return False
    _held[directory] = lock
    return True


def remove_unless_used(directory: Path) -> bool:
    """Remove `directory` unless a harness process holds it; True if it is gone.

    Called under the build lock, the only place image directories are removed."""
    if not directory.exists():
        return True
    with open(directory / IN_USE_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(directory, ignore_errors=True)
    return True
