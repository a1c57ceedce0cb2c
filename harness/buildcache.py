"""The build cache (~/.cache/sysext-harness) and the Debian roots bootstrapped into it.

Every builder (reference roots and images in `harness.targets.build`, extensions and DDIs
in `harness.extensions`) keeps its output here under a digest of its recipe. They share
the rules in this module: one build at a time per cache (`build_lock`), builds in a
temporary name renamed into place (`rename_into_place`), older versions removed once the
new one is there (`remove_stale_versions`), and one way to run mmdebstrap (`mmdebstrap`).
It imports no builder, so every builder may import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.run import run

__all__ = [
    "DEFAULT_MIRROR",
    "TMP_PREFIX",
    "build_lock",
    "cache_dir",
    "clean_stale_tmp",
    "debian_mirror",
    "mmdebstrap",
    "remove_stale_versions",
    "rename_into_place",
    "require_root",
    "rmtree",
    "versions_of",
]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Prefix of the temporary directories builds write into before `rename_into_place`.
TMP_PREFIX = ".tmp-"
#: A live build is never this old, so a temporary directory this old was left by a kill.
STALE_TMP_SECONDS = 6 * 3600
MMDEBSTRAP_TIMEOUT = 1800
_LOG_TAIL_LINES = 25

_lock_held = threading.local()


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per cache, also across concurrent harness processes. Re-entrant
    in a thread, so a build under the lock may build what it needs (a DDI's toolbox)."""
    if getattr(_lock_held, "depth", 0):
        _lock_held.depth += 1
        try:
            yield
        finally:
            _lock_held.depth -= 1
        return
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _lock_held.depth = 1
        try:
            yield
        finally:
            _lock_held.depth = 0


def require_root(what: str) -> None:
    """Fail early, before a long build, where mmdebstrap and file ownership need root."""
    if os.geteuid() != 0:
        raise HarnessError(f"{what} needs root (mmdebstrap, file ownership)")


def rmtree(path: Path) -> None:
    """Remove a file or directory tree, also one with read-only directories (a spec may
    ask for them); a missing path is fine."""

    def fix_and_retry(func: Callable[..., object], p: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(posixpath.dirname(p), 0o755)
        with contextlib.suppress(OSError):
            if not os.path.islink(p):
                os.chmod(p, 0o755)
        func(p)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif not path.exists():
        return
    elif sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix_and_retry)
    else:
        shutil.rmtree(path, onerror=fix_and_retry)


def rename_into_place(tmp: Path, dest: Path, done: Path | None = None) -> None:
    """Rename the finished build `tmp` to `dest`, so a reader never sees half a build.
    If that fails because another process renamed the same build first (`done`, a path
    inside `dest`, exists), its result is identical: drop ours."""
    try:
        os.rename(tmp, dest)
    except OSError:
        if done is None or not done.exists():
            raise
        rmtree(tmp)


def versions_of(directory: Path, name: str, suffix: str = "") -> list[Path]:
    """Cached builds of `name` (`<name>-<16 hex><suffix>`), not of names it prefixes."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}{re.escape(suffix)}")
    return [p for p in directory.iterdir() if pattern.fullmatch(p.name)]


def remove_stale_versions(directory: Path, name: str, suffix: str = "") -> None:
    """Remove every cached build of `name` in `directory`: called just before the new one
    is renamed into place, so the cache keeps one version of each recipe."""
    for stale in versions_of(directory, name, suffix):
        rmtree(stale)


def clean_stale_tmp(directory: Path) -> None:
    """Remove temporary directories of builds that were killed long ago."""
    now = time.time()
    for p in directory.glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - p.lstat().st_mtime > STALE_TMP_SECONDS:
                rmtree(p)


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses, so image builds go where apt already goes."""
    env = os.environ.get("SYSEXT_HARNESS_MIRROR")
    if env:
        return env
    candidates: list[str] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        candidates += re.findall(r"^URIs:\s*(\S+)", text, re.M)
        candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def mmdebstrap(what: str, dest: Path, *, suites: Sequence[str], packages: Sequence[str],
               variant: str, log_path: Path, mirror: str, mode: str | None = None,
               format: str | None = None, dpkg_excludes: Sequence[str] = ()) -> None:
    """Bootstrap Debian `suites[0]` (with `packages` from any of `suites`) into `dest`, a
    tarball or directory. Its output goes to `log_path`; on failure `dest` is removed and
    the error names `what` and ends with the log's tail."""
    argv: list[str | Path] = ["mmdebstrap", f"--variant={variant}"]
    if mode is not None:
        argv.append(f"--mode={mode}")
    if format is not None:
        argv.append(f"--format={format}")
    # Mirrors may be snapshots whose Release files have expired (as sid's do here).
    argv.append('--aptopt=Acquire::Check-Valid-Until "false"')
    argv += [f"--dpkgopt=path-exclude={glob}" for glob in dpkg_excludes]
    argv += ["--include=" + ",".join(packages), suites[0], dest]
    argv += [f"deb {mirror} {suite} main" for suite in suites]
    proc = run(argv, check=False, timeout=MMDEBSTRAP_TIMEOUT)
    log_path.write_bytes((proc.stdout or b"") + (proc.stderr or b""))
    if proc.returncode != 0:
        rmtree(dest)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
        raise HarnessError(f"mmdebstrap failed for {what} (log: {log_path}):\n{tail}")
