"""Learn what an image target is by booting it: os-release, systemd, architecture.

Scenarios decide where they apply before any VM runs (pytest collects first), and a real
image carries no manifest of ours. So an image target is booted once, asked
(`harness.targets.facts.FACTS_COMMAND`), and the answer is kept in the cache under the
image's sha256: later runs start from the cache and boot nothing extra.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Callable

from harness.buildcache import cache_dir
from harness.machine.pool import MachinePool
from harness.machine.rundir import RunDir
from harness.targets.facts import FACTS_COMMAND, cached_facts, parse_facts, store_facts
from harness.targets.image_target import with_facts
from harness.targets.model import GuestFacts, Target

PROBE_TIMEOUT = 60.0


def _stderr(message: str) -> None:
    print(f"[probe] {message}", file=sys.stderr, flush=True)


def resolve(target: Target, progress: Callable[[str], None] = _stderr) -> Target:
    """`target` with its facts: from the cache, else from one boot (one prober at a time
    per image, also across parallel workers)."""
    if target.image is None or target.facts is not None:
        return target
    digest = target.image.digest
    facts = cached_facts(digest)
    if facts is None:
        lock_path = cache_dir() / "facts" / f"{digest}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            facts = cached_facts(digest) or _probe(target, progress)
    return with_facts(target, facts)


def _probe(target: Target, progress: Callable[[str], None]) -> GuestFacts:
    assert target.image is not None
    progress(f"{target.name}: booting {target.image.path.name} once to read what it is "
             f"(os-release, systemd, architecture); kept in the cache afterwards")
    run_dir = RunDir(label="probe")
    pool = MachinePool(run_dir.path, progress=progress)
    try:
        machine = pool.cold_boot(target, run_dir.path / "probe")
        facts = parse_facts(machine.succeed(FACTS_COMMAND, timeout=PROBE_TIMEOUT))
        pool.stop(machine)
    finally:
        pool.close()
        run_dir.cleanup()
    store_facts(target.image.digest, facts)
    progress(f"{target.name}: {facts.os_release.get('PRETTY_NAME', facts.os_release['ID'])}, "
             f"systemd {facts.systemd_version}, {facts.architecture}")
    return facts
