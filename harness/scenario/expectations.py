"""Checks of an `expect:` block against a command result and the guest's state.

The checks never raise on a mismatch: they return every `Failure` so one failing step
reports all that is wrong at once, each with the guest commands and output that prove it.
Guest commands go through a `run` callable so the runner can log them.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from harness.scenario.model import Expectation

PROBE_NAME = ".sysext-harness-probe"
# systemd-confext manages /etc; every other hierarchy belongs to systemd-sysext.
CONFEXT_HIERARCHY = "/etc"
_OUTPUT_TAIL = 40


class CommandOutput(Protocol):
    """What a guest command returns (satisfied by the machine layer's CommandResult)."""

    @property
    def exit_code(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


Run = Callable[[str], CommandOutput]


@dataclass(frozen=True)
class Evidence:
    """A guest command and what it printed, shown under a failure."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @classmethod
    def of(cls, command: str, result: CommandOutput) -> Evidence:
        return cls(command, result.exit_code, result.stdout, result.stderr)

    def render(self, tail: int = _OUTPUT_TAIL) -> str:
        return format_command(self.command, self.exit_code, self.stdout, self.stderr, tail)


@dataclass(frozen=True)
class Failure:
    message: str
    evidence: tuple[Evidence, ...] = ()


def _tail(text: str, lines: int) -> str:
    parts = text.rstrip("\n").splitlines()
    if len(parts) <= lines:
        return "\n".join(parts)
    return f"[... {len(parts) - lines} lines cut ...]\n" + "\n".join(parts[-lines:])


def format_command(
    command: str, exit_code: int, stdout: str, stderr: str, tail: int = _OUTPUT_TAIL
) -> str:
    """A command with its exit code and output, as shown in failures and step logs."""
    out = [f"$ {command}", f"[exit {exit_code}]"]
    if stdout.strip():
        out += ["--- stdout ---", _tail(stdout, tail)]
    if stderr.strip():
        out += ["--- stderr ---", _tail(stderr, tail)]
    if not stdout.strip() and not stderr.strip():
        out.append("(no output)")
    return "\n".join(out)


def _names(names: Iterable[str]) -> str:
    items = sorted(names)
    return "[" + ", ".join(items) + "]" if items else "nothing"


# ------------------------------------------------------------------ command expectations


def check_command(expect: Expectation | None, result: CommandOutput) -> list[Failure]:
    """Exit code and output checks. Without `exit:` the command must exit 0.

    `expect` must already be resolved for the target's systemd version.
    """
    failures: list[Failure] = []
    wanted = 0 if expect is None or expect.exit is None else expect.exit
    if result.exit_code != wanted:
        failures.append(Failure(f"expected exit {wanted}, got {result.exit_code}"))
    if expect is None:
        return failures
    stdout = result.stdout
    output = f"{result.stdout}\n{result.stderr}"
    for text in _tuple(expect.stdout_contains):
        if text not in stdout:
            failures.append(Failure(f"stdout does not contain {text!r}"))
    for text in _tuple(expect.stdout_not_contains):
        if text in stdout:
            failures.append(Failure(f"stdout contains {text!r}, which it must not"))
    for text in _tuple(expect.output_contains):
        if text not in output:
            failures.append(Failure(f"output does not contain {text!r}"))
    for text in _tuple(expect.output_not_contains):
        if text in output:
            failures.append(Failure(f"output contains {text!r}, which it must not"))
    for pattern in _tuple(expect.output_matches):
        if not re.search(pattern, output, re.MULTILINE):
            failures.append(Failure(f"output does not match regex {pattern!r}"))
    return failures


def _tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    assert isinstance(value, tuple), f"unresolved expectation value {value!r}"
    return value


# -------------------------------------------------------------------- merged extensions


def parse_status_json(text: str) -> dict[str, frozenset[str]] | None:
    """`systemd-sysext status --json=short` -> {hierarchy: names}; None if the shape is odd.

    257 prints `[{"hierarchy":"/usr","extensions":["a"],"since":...}, ...]` with the string
    "none" when nothing is merged. A single object or one object per line is accepted too;
    anything else returns None so the caller falls back to the metadata files.
    """
    text = text.strip()
    if not text:
        return None
    try:
        data: object = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        return None
    out: dict[str, frozenset[str]] = {}
    for entry in data:
        if not isinstance(entry, dict):
            return None
        hierarchy = entry.get("hierarchy")
        if not isinstance(hierarchy, str) or not hierarchy.startswith("/"):
            return None
        extensions = entry.get("extensions")
        if extensions == "none" or extensions == []:
            names: frozenset[str] = frozenset()
        elif isinstance(extensions, list) and all(isinstance(n, str) for n in extensions):
            names = frozenset(extensions)
        else:
            return None
        out[_norm(hierarchy)] = names
    return out


def _norm(hierarchy: str) -> str:
    return hierarchy.rstrip("/") or "/"


def status_command(hierarchy: str) -> str:
    tool = "systemd-confext" if _norm(hierarchy) == CONFEXT_HIERARCHY else "systemd-sysext"
    return f"{tool} status --json=short"


def metadata_file(hierarchy: str) -> str:
    meta = ".systemd-confext" if _norm(hierarchy) == CONFEXT_HIERARCHY else ".systemd-sysext"
    return posixpath.join(_norm(hierarchy), meta, "extensions")


def read_merged(
    run: Run, hierarchies: Iterable[str]
) -> tuple[dict[str, frozenset[str] | None], list[Evidence]]:
    """What is merged into each hierarchy, plus the commands that showed it.

    Prefers `status --json=short`; for a hierarchy the JSON does not describe clearly,
    reads `<hierarchy>/.systemd-sysext/extensions` (absent: nothing merged). A value of
    None means neither source could be read.
    """
    wanted = [_norm(h) for h in hierarchies]
    evidence: list[Evidence] = []
    parsed: dict[str, dict[str, frozenset[str]] | None] = {}
    out: dict[str, frozenset[str] | None] = {}
    for h in wanted:
        cmd = status_command(h)
        if cmd not in parsed:
            result = run(cmd)
            evidence.append(Evidence.of(cmd, result))
            parsed[cmd] = parse_status_json(result.stdout) if result.exit_code == 0 else None
        status = parsed[cmd]
        if status is not None and h in status:
            out[h] = status[h]
            continue
        path = shlex.quote(metadata_file(h))
        cmd = f"test ! -e {path} || cat {path}"
        result = run(cmd)
        evidence.append(Evidence.of(cmd, result))
        if result.exit_code != 0:
            out[h] = None
        else:
            out[h] = frozenset(line.strip() for line in result.stdout.splitlines() if line.strip())
    return out, evidence


def _check_merged(run: Run, expected: Mapping[str, frozenset[str]]) -> list[Failure]:
    got, evidence = read_merged(run, expected)
    failures = []
    for hierarchy, names in expected.items():
        actual = got[_norm(hierarchy)]
        if actual is None:
            failures.append(Failure(
                f"cannot tell what is merged into {hierarchy}", tuple(evidence)))
        elif actual != names:
            detail = []
            if names - actual:
                detail.append(f"missing {_names(names - actual)}")
            if actual - names:
                detail.append(f"unexpected {_names(actual - names)}")
            failures.append(Failure(
                f"merged into {hierarchy}: expected {_names(names)}, got {_names(actual)} "
                f"({'; '.join(detail)})",
                tuple(evidence),
            ))
    return failures


# ----------------------------------------------------------------------- guest state


def _check_files(run: Run, paths: tuple[str, ...], *, present: bool) -> list[Failure]:
    quoted = " ".join(shlex.quote(p) for p in paths)
    test = 'if [ -e "$p" ] || [ -L "$p" ]; then :; else printf "%s\\n" "$p"; fi'
    if not present:
        test = 'if [ -e "$p" ] || [ -L "$p" ]; then printf "%s\\n" "$p"; fi'
    cmd = f"for p in {quoted}; do {test}; done"
    result = run(cmd)
    if result.exit_code != 0:
        return [Failure("could not check files", (Evidence.of(cmd, result),))]
    wrong = [line for line in result.stdout.splitlines() if line]
    if not wrong:
        return []
    evidence = []
    for path in wrong[:5]:
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        ls = f"ls -la {shlex.quote(parent if present else path)}"
        evidence.append(Evidence.of(ls, run(ls)))
    what = "missing" if present else "present, but expected absent"
    return [Failure(f"{what}: {', '.join(wrong)}", tuple(evidence))]


def _check_file_contains(run: Run, expected: Mapping[str, tuple[str, ...]]) -> list[Failure]:
    failures = []
    for path, texts in expected.items():
        cmd = f"cat {shlex.quote(path)}"
        result = run(cmd)
        ev = Evidence.of(cmd, result)
        if result.exit_code != 0:
            failures.append(Failure(f"cannot read {path}", (ev,)))
            continue
        for text in texts:
            if text not in result.stdout:
                failures.append(Failure(f"{path} does not contain {text!r}", (ev,)))
    return failures


def _check_writability(run: Run, directory: str, *, writable: bool) -> list[Failure]:
    """Create a probe file: EROFS means read-only; success means writable (probe removed)."""
    probe = shlex.quote(posixpath.join(directory, PROBE_NAME))
    cmd = f"LC_ALL=C touch {probe}"
    result = run(cmd)
    evidence: list[Evidence] = [Evidence.of(cmd, result)]
    if result.exit_code == 0:
        cleanup = f"rm -f {probe}"
        cleaned = run(cleanup)
        if cleaned.exit_code != 0:
            evidence.append(Evidence.of(cleanup, cleaned))
            return [Failure(f"could not remove probe file in {directory}", tuple(evidence))]
        if writable:
            return []
        return [Failure(f"{directory} is writable, expected read-only", tuple(evidence))]
    erofs = "Read-only file system" in result.stderr + result.stdout
    if not writable and erofs:
        return []
    if writable:
        return [Failure(f"{directory} is not writable", tuple(evidence))]
    return [Failure(
        f"{directory}: creating a file failed, but not with EROFS (read-only file system)",
        tuple(evidence),
    )]


def _check_units(run: Run, expected: Mapping[str, str]) -> list[Failure]:
    failures = []
    for unit, state in expected.items():
        cmd = f"systemctl is-active {shlex.quote(unit)}"
        result = run(cmd)
        actual = result.stdout.strip() or "(nothing)"
        if actual != state:
            status = f"systemctl status --no-pager --full {shlex.quote(unit)}"
            failures.append(Failure(
                f"{unit} is {actual}, expected {state}",
                (Evidence.of(cmd, result), Evidence.of(status, run(status))),
            ))
    return failures


def check_state(expect: Expectation, run: Run) -> list[Failure]:
    """Every guest-state key of a resolved `expect` block, in a fixed order."""
    failures: list[Failure] = []
    merged: dict[str, frozenset[str]] = {}
    if isinstance(expect.merged_into, Mapping):
        merged.update(expect.merged_into)
    if isinstance(expect.merged, frozenset):
        if "/usr" in merged and merged["/usr"] != expect.merged:
            failures.append(Failure(
                "merged and merged_into./usr disagree; the scenario cannot pass"))
        merged["/usr"] = expect.merged
    if merged:
        failures += _check_merged(run, merged)
    if expect.files_present is not None:
        failures += _check_files(run, _tuple(expect.files_present), present=True)
    if expect.files_absent is not None:
        failures += _check_files(run, _tuple(expect.files_absent), present=False)
    if isinstance(expect.file_contains, Mapping):
        failures += _check_file_contains(run, expect.file_contains)
    for directory in _tuple(expect.read_only):
        failures += _check_writability(run, directory, writable=False)
    for directory in _tuple(expect.writable):
        failures += _check_writability(run, directory, writable=True)
    if isinstance(expect.unit_state, Mapping):
        failures += _check_units(run, expect.unit_state)
    return failures
