"""The one way the harness runs host commands: logged, bounded, and with readable errors."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.errors import CommandError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = 600,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise CommandError with the command line and its output."""
    args = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            check=False,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input,
        )
    except FileNotFoundError as exc:
        raise CommandError(
            f"{args[0]}: command not found (run `make setup` to install host tools)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"timed out after {timeout}s: {shlex.join(args)}") from exc
    if check and proc.returncode != 0:
        out = (proc.stderr or b"").decode(errors="replace").strip()
        if not out:
            out = (proc.stdout or b"").decode(errors="replace").strip()
        tail = "\n".join(out.splitlines()[-20:])
        raise CommandError(f"exit {proc.returncode}: {shlex.join(args)}\n{tail}")
    return proc
