"""The `expect:` keys: how each is validated, and how each is checked in the guest.

Every key is one record in `_KEYS` (name, validator, check); the loader, `Expectation`
and the runner all follow that table. The checks never raise on a mismatch: they return
every `Failure` so one failing step reports all that is wrong at once, each with the
guest commands and output that prove it. Guest commands go through a `run` callable so
the runner can log them.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Protocol

from harness.scenario.model import Expectation, MountCheck
from harness.scenario.values import (
    INVALID,
    Ctx,
    Validator,
    abs_path,
    join,
    maybe_versioned,
    name_item,
    path_item,
    regex_item,
    str_list,
    text_item,
    type_name,
)

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


def failure_message(label: str, failures: list[Failure], command: Evidence | None) -> str:
    """`step 4 (merge): expected exit 1, got 0` plus the command and its output."""
    if len(failures) == 1:
        lines = [f"{label}: {failures[0].message}"]
    else:
        lines = [f"{label}: {len(failures)} expectations failed"]
        lines += [f"  - {f.message}" for f in failures]
    if command is not None:
        lines.append(command.render())
    shown: set[Evidence] = set()
    for failure in failures:
        for ev in failure.evidence:
            if ev not in shown:
                shown.add(ev)
                lines.append(ev.render())
    return "\n".join(lines)


# ------------------------------------------------------------------ command expectations
# Each check gets the whole resolved block and looks at its own key only (an unset key
# checks nothing), so the table below can call every check in order.


def _exit(expect: Expectation, result: CommandOutput) -> list[Failure]:
    """Without `exit:` the command must exit 0."""
    wanted = 0 if expect.exit is None else expect.exit
    if result.exit_code != wanted:
        return [Failure(f"expected exit {wanted}, got {result.exit_code}")]
    return []


def _output(result: CommandOutput) -> str:
    return f"{result.stdout}\n{result.stderr}"


def _stdout_contains(expect: Expectation, result: CommandOutput) -> list[Failure]:
    return [Failure(f"stdout does not contain {text!r}")
            for text in _tuple(expect.stdout_contains) if text not in result.stdout]


def _stdout_not_contains(expect: Expectation, result: CommandOutput) -> list[Failure]:
    return [Failure(f"stdout contains {text!r}, which it must not")
            for text in _tuple(expect.stdout_not_contains) if text in result.stdout]


def _output_contains(expect: Expectation, result: CommandOutput) -> list[Failure]:
    return [Failure(f"output does not contain {text!r}")
            for text in _tuple(expect.output_contains) if text not in _output(result)]


def _output_not_contains(expect: Expectation, result: CommandOutput) -> list[Failure]:
    return [Failure(f"output contains {text!r}, which it must not")
            for text in _tuple(expect.output_not_contains) if text in _output(result)]


def _output_matches(expect: Expectation, result: CommandOutput) -> list[Failure]:
    return [Failure(f"output does not match regex {pattern!r}")
            for pattern in _tuple(expect.output_matches)
            if not re.search(pattern, _output(result), re.MULTILINE)]


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


def status_command(hierarchy: str, root: str | None = None) -> str:
    tool = "systemd-confext" if _norm(hierarchy) == CONFEXT_HIERARCHY else "systemd-sysext"
    return f"{tool} {f'--root={shlex.quote(root)} ' if root else ''}status --json=short"


def metadata_file(hierarchy: str, root: str | None = None) -> str:
    meta = ".systemd-confext" if _norm(hierarchy) == CONFEXT_HIERARCHY else ".systemd-sysext"
    return posixpath.join(_in_root(_norm(hierarchy), root), meta, "extensions")


def _in_root(path: str, root: str | None) -> str:
    return _norm(root) + path if root and _norm(root) != "/" else path


def tree_of(run: Run) -> str | None:
    """The tree (`root:` of the step) whose hierarchies `merged` reads, as the runner's
    probe carries it; a bare callable (unit tests) reads the real root."""
    return getattr(run, "root", None)


def read_merged(
    run: Run, hierarchies: Iterable[str]
) -> tuple[dict[str, frozenset[str] | None], list[Evidence]]:
    """What is merged into each hierarchy, plus the commands that showed it.

    Prefers `status --json=short` (with `--root=` for a step's tree); for a hierarchy the
    JSON does not describe clearly, reads `<hierarchy>/.systemd-sysext/extensions`
    (absent: nothing merged). A value of None means neither source could be read.
    """
    root = tree_of(run)
    wanted = [_norm(h) for h in hierarchies]
    evidence: list[Evidence] = []
    parsed: dict[str, dict[str, frozenset[str]] | None] = {}
    out: dict[str, frozenset[str] | None] = {}
    for h in wanted:
        cmd = status_command(h, root)
        if cmd not in parsed:
            result = run(cmd)
            evidence.append(Evidence.of(cmd, result))
            parsed[cmd] = parse_status_json(result.stdout) if result.exit_code == 0 else None
        status = parsed[cmd]
        shown = next((k for k in (_in_root(h, root), h) if status is not None and k in status),
                     None)
        if status is not None and shown is not None:
            out[h] = status[shown]
            continue
        path = shlex.quote(metadata_file(h, root))
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


def _merged(expect: Expectation, run: Run) -> list[Failure]:
    """`merged` and `merged_into` together: one status read covers both, and a block that
    names /usr both ways must agree with itself."""
    failures: list[Failure] = []
    wanted: dict[str, frozenset[str]] = {}
    if isinstance(expect.merged_into, Mapping):
        wanted.update(expect.merged_into)
    if isinstance(expect.merged, frozenset):
        if "/usr" in wanted and wanted["/usr"] != expect.merged:
            failures.append(Failure(
                "merged and merged_into./usr disagree; the scenario cannot pass"))
        wanted["/usr"] = expect.merged
    if wanted:
        failures += _check_merged(run, wanted)
    return failures


def _files_present(expect: Expectation, run: Run) -> list[Failure]:
    if expect.files_present is None:
        return []
    return _check_files(run, _tuple(expect.files_present), present=True)


def _files_absent(expect: Expectation, run: Run) -> list[Failure]:
    if expect.files_absent is None:
        return []
    return _check_files(run, _tuple(expect.files_absent), present=False)


def _file_contains(expect: Expectation, run: Run) -> list[Failure]:
    if not isinstance(expect.file_contains, Mapping):
        return []
    return _check_file_contains(run, expect.file_contains)


def _read_only(expect: Expectation, run: Run) -> list[Failure]:
    failures: list[Failure] = []
    for directory in _tuple(expect.read_only):
        failures += _check_writability(run, directory, writable=False)
    return failures


def _writable(expect: Expectation, run: Run) -> list[Failure]:
    failures: list[Failure] = []
    for directory in _tuple(expect.writable):
        failures += _check_writability(run, directory, writable=True)
    return failures


def _unit_state(expect: Expectation, run: Run) -> list[Failure]:
    if not isinstance(expect.unit_state, Mapping):
        return []
    return _check_units(run, expect.unit_state)


@dataclass(frozen=True)
class _Mount:
    """One line of /proc/self/mountinfo: what `mounted:` compares."""

    target: str
    fstype: str
    source: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> dict[str, _Mount]:
    """Mount point -> its topmost mount (the last line naming it wins, as the kernel lists
    mounts stacked on one point in the order they were made)."""
    mounts: dict[str, _Mount] = {}
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields_, tail = before.split(), after.split()
        if not sep or len(fields_) < 6 or len(tail) < 2:
            continue
        options = set(fields_[5].split(","))
        if len(tail) > 2:
            options |= set(tail[2].split(","))
        target = _unescape(fields_[4])
        mounts[target] = _Mount(target, tail[0], _unescape(tail[1]), frozenset(options))
    return mounts


MOUNTINFO = "cat /proc/self/mountinfo"


def _mounted(expect: Expectation, run: Run) -> list[Failure]:
    if not isinstance(expect.mounted, Mapping):
        return []
    result = run(MOUNTINFO)
    mounts = parse_mountinfo(result.stdout)
    evidence = (Evidence.of(MOUNTINFO, result),)
    failures: list[Failure] = []
    for path, check in expect.mounted.items():
        mount = mounts.get(path)
        if mount is None:
            failures.append(Failure(f"{path} is not a mount point", evidence))
            continue
        if check.fstype is not None and mount.fstype != check.fstype:
            failures.append(Failure(
                f"{path}: mounted as {mount.fstype}, expected {check.fstype}", evidence))
        missing = [o for o in check.options if o not in mount.options]
        if missing:
            failures.append(Failure(
                f"{path}: mount options lack {', '.join(missing)} "
                f"(has {','.join(sorted(mount.options))})", evidence))
        if check.source is not None:
            failures += _check_source(run, path, mount, check.source)
    return failures


def _check_source(run: Run, path: str, mount: _Mount, source: str) -> list[Failure]:
    """A device or file system name compares with mountinfo's source; a directory (a bind
    mount's origin) must be the very directory `path` shows (same device and inode)."""
    if not source.startswith("/") or source.startswith("/dev/"):
        if mount.source == source:
            return []
        return [Failure(f"{path}: source is {mount.source}, expected {source}")]
    cmd = f"stat -L -c %d:%i {shlex.quote(path)} {shlex.quote(source)}"
    result = run(cmd)
    ids = result.stdout.split()
    if result.exit_code == 0 and len(ids) == 2 and ids[0] == ids[1]:
        return []
    return [Failure(f"{path} does not show {source} (not a bind mount of it)",
                    (Evidence.of(cmd, result),))]


def _not_mounted(expect: Expectation, run: Run) -> list[Failure]:
    paths = _tuple(expect.not_mounted)
    if not paths:
        return []
    result = run(MOUNTINFO)
    mounts = parse_mountinfo(result.stdout)
    evidence = (Evidence.of(MOUNTINFO, result),)
    return [Failure(f"{p} is a mount point ({mounts[p].fstype} from {mounts[p].source}), "
                    "expected none", evidence) for p in paths if p in mounts]


def remembered_values(run: Run) -> Mapping[str, tuple[str, str]]:
    """What `remember` steps kept, name -> (command, value), as the runner's probe
    carries it; a bare callable (unit tests) remembers nothing."""
    return getattr(run, "remembered", MappingProxyType({}))


def _compare_remembered(expect_names: tuple[str, ...], run: Run, *,
                        same: bool) -> list[Failure]:
    failures: list[Failure] = []
    memory = remembered_values(run)
    for name in expect_names:
        if name not in memory:
            failures.append(Failure(
                f"nothing remembered as {name!r}: its `remember` step did not run "
                "(skipped by `when:`?)"))
            continue
        command, before = memory[name]
        result = run(command)
        now = result.stdout.strip()
        evidence = (Evidence.of(command, result),)
        if result.exit_code != 0:
            failures.append(Failure(f"{name}: its command failed now", evidence))
        elif same and now != before:
            failures.append(Failure(f"{name} changed: was {before!r}, now {now!r}", evidence))
        elif not same and now == before:
            failures.append(Failure(f"{name} did not change: still {now!r}", evidence))
    return failures


def _unchanged(expect: Expectation, run: Run) -> list[Failure]:
    return _compare_remembered(_tuple(expect.unchanged), run, same=True)


def _changed(expect: Expectation, run: Run) -> list[Failure]:
    return _compare_remembered(_tuple(expect.changed), run, same=False)


# ----------------------------------------------------------------------- validators

UNIT_STATES: tuple[str, ...] = (
    "active",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "reloading",
    "refreshing",
    "maintenance",
)


def _v_exit(ctx: Ctx, key: str, value: object) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    ctx.error(key, "exit must be an exit code", value, allowed="an integer from 0 to 255")
    return INVALID


def _v_texts(ctx: Ctx, key: str, value: object) -> Any:
    return str_list(ctx, key, value, text_item, what="a string or a list of strings")


def _v_regexes(ctx: Ctx, key: str, value: object) -> Any:
    return str_list(ctx, key, value, regex_item, what="a regex or a list of regexes")


def _v_paths(ctx: Ctx, key: str, value: object) -> Any:
    return str_list(ctx, key, value, path_item, what="an absolute path or a list of them")


def _v_names(ctx: Ctx, key: str, value: object) -> Any:
    names = str_list(
        ctx,
        key,
        value,
        name_item,
        allow_single=False,
        allow_empty=True,
        what="a list of extension names ([] for none)",
    )
    return INVALID if names is INVALID else frozenset(names)


def _v_merged_into(ctx: Ctx, key: str, value: object) -> Any:
    allowed = "a mapping of hierarchy (e.g. /usr, /opt) to a list of extension names"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "merged_into must be a non-empty mapping", value, allowed=allowed)
        return INVALID
    return _path_mapping(ctx, key, value, _v_names, allow_root=False)


def _path_mapping(ctx: Ctx, key: str, value: Mapping[Any, Any],
                  item: Callable[[Ctx, str, object], Any], *, allow_root: bool = True) -> Any:
    """A mapping of absolute path -> what `item` makes of its value (None or INVALID: an
    error it reported); paths lose a trailing slash."""
    out: dict[str, Any] = {}
    ok = True
    for path, raw in value.items():
        sub = join(key, path)
        p = abs_path(ctx, sub, path, allow_root=allow_root)
        checked = item(ctx, sub, raw)
        if p is None or checked is None or checked is INVALID:
            ok = False
        else:
            out[p.rstrip("/") or "/"] = checked
    return MappingProxyType(out) if ok else INVALID


def _v_file_contains(ctx: Ctx, key: str, value: object) -> Any:
    allowed = "a mapping of absolute path to a string or a list of strings"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "file_contains must be a non-empty mapping", value, allowed=allowed)
        return INVALID
    return _path_mapping(ctx, key, value, _v_texts)


def _v_unit_state(ctx: Ctx, key: str, value: object) -> Any:
    allowed = "a mapping of unit name to state, e.g. {hello.service: active}"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "unit_state must be a non-empty mapping", value, allowed=allowed)
        return INVALID
    out: dict[str, str] = {}
    ok = True
    for unit, state in value.items():
        sub = join(key, unit)
        if not isinstance(unit, str) or not unit or "/" in unit:
            ctx.error(sub, "must be a unit name", unit, allowed="e.g. hello.service")
            ok = False
        if state not in UNIT_STATES:
            ctx.error(sub, "unknown unit state", state, allowed=UNIT_STATES)
            ok = False
        if ok:
            out[str(unit)] = str(state)
    return MappingProxyType(out) if ok else INVALID


MOUNT_CHECK_KEYS: tuple[str, ...] = ("fstype", "source", "options")


def _v_mount_check(ctx: Ctx, key: str, value: object) -> MountCheck | None:
    allowed = "nothing, or a mapping with fstype, source and options"
    if value is None:
        return MountCheck()
    if not isinstance(value, dict):
        ctx.error(key, f"expected a mapping, not a {type_name(value)}", value, allowed=allowed)
        return None
    ok = True
    for k in value:
        if k not in MOUNT_CHECK_KEYS:
            ctx.error(join(key, k), "unknown mount check", k, allowed=MOUNT_CHECK_KEYS)
            ok = False
    fstype = value.get("fstype")
    if fstype is not None and (not isinstance(fstype, str) or not fstype):
        ctx.error(join(key, "fstype"), "must be a file system type", fstype,
                  allowed="e.g. tmpfs, overlay, ext4")
        ok = False
    source = value.get("source")
    if source is not None and (not isinstance(source, str) or not source):
        ctx.error(join(key, "source"), "must be a device, a file system name or a directory",
                  source, allowed="e.g. tmpfs, /dev/vdb, /run/share")
        ok = False
    options = str_list(ctx, join(key, "options"), value.get("options", []), text_item,
                       allow_empty=True, what="an option or a list of them, e.g. ro")
    if options is INVALID or not ok:
        return None
    return MountCheck(fstype=fstype, source=source,
                      options=tuple(o for opt in options for o in opt.split(",") if o))


def _v_mounted(ctx: Ctx, key: str, value: object) -> Any:
    """`mounted: [/usr/share]` or `mounted: {/usr/share: {fstype: tmpfs, options: ro}}`."""
    if isinstance(value, list | str):
        paths = _v_paths(ctx, key, value)
        if paths is INVALID:
            return INVALID
        return MappingProxyType({p: MountCheck() for p in paths})
    if not isinstance(value, dict) or not value:
        ctx.error(key, "mounted must be a path, a list of paths or a non-empty mapping",
                  value, allowed="e.g. [/usr/share] or {/usr/share: {fstype: tmpfs}}")
        return INVALID
    return _path_mapping(ctx, key, value, _v_mount_check)


REMEMBERED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def remembered_name_item(ctx: Ctx, key: str, value: object) -> str | None:
    if isinstance(value, str) and REMEMBERED_NAME.fullmatch(value):
        return value
    ctx.error(key, "not a name a `remember` step can give", value,
              allowed="letters, digits, _ and -, not starting with a digit")
    return None


def _v_remembered(ctx: Ctx, key: str, value: object) -> Any:
    return str_list(ctx, key, value, remembered_name_item,
                    what="a remembered name or a list of them")


# ------------------------------------------------------------------------ the keys

CommandCheck = Callable[[Expectation, CommandOutput], list[Failure]]
StateCheck = Callable[[Expectation, Run], list[Failure]]


@dataclass(frozen=True)
class CommandKey:
    """A key about the step's own command (exit code, output): only on command steps."""

    name: str
    validate: Validator
    check: CommandCheck


@dataclass(frozen=True)
class StateKey:
    """A key about the guest's state: on command steps and on `expect:` steps."""

    name: str
    validate: Validator
    check: StateCheck | None  # None: another key's check covers it (merged_into)


ExpectKey = CommandKey | StateKey

# Every `expect:` key, in the order they are checked (and `Expectation` declares them).
_KEYS: tuple[ExpectKey, ...] = (
    CommandKey("exit", _v_exit, _exit),
    CommandKey("stdout_contains", _v_texts, _stdout_contains),
    CommandKey("stdout_not_contains", _v_texts, _stdout_not_contains),
    CommandKey("output_contains", _v_texts, _output_contains),
    CommandKey("output_not_contains", _v_texts, _output_not_contains),
    CommandKey("output_matches", _v_regexes, _output_matches),  # regexes, re.MULTILINE
    StateKey("merged", _v_names, _merged),  # exact set merged into /usr
    StateKey("merged_into", _v_merged_into, None),  # checked by _merged, with merged
    StateKey("files_present", _v_paths, _files_present),
    StateKey("files_absent", _v_paths, _files_absent),
    StateKey("file_contains", _v_file_contains, _file_contains),
    StateKey("read_only", _v_paths, _read_only),
    StateKey("writable", _v_paths, _writable),
    StateKey("unit_state", _v_unit_state, _unit_state),
    StateKey("mounted", _v_mounted, _mounted),
    StateKey("not_mounted", _v_paths, _not_mounted),
    StateKey("unchanged", _v_remembered, _unchanged),
    StateKey("changed", _v_remembered, _changed),
)
EXPECT_REGISTRY: Mapping[str, ExpectKey] = MappingProxyType({k.name: k for k in _KEYS})
_COMMAND: tuple[CommandKey, ...] = tuple(k for k in _KEYS if isinstance(k, CommandKey))
_STATE: tuple[StateKey, ...] = tuple(k for k in _KEYS if isinstance(k, StateKey))
COMMAND_KEYS: tuple[str, ...] = tuple(k.name for k in _COMMAND)
STATE_KEYS: tuple[str, ...] = tuple(k.name for k in _STATE)
EXPECT_KEYS: tuple[str, ...] = COMMAND_KEYS + STATE_KEYS
assert tuple(f.name for f in fields(Expectation)) == EXPECT_KEYS, (
    "Expectation's fields and the expect keys drifted apart")


def parse_expect(ctx: Ctx, key: str, value: object, *, command: bool) -> Expectation | None:
    """One `expect:` block; `command` says whether it belongs to a step with a command."""
    allowed = EXPECT_KEYS if command else STATE_KEYS
    if not isinstance(value, dict) or not value:
        ctx.error(
            key,
            "expect must be a non-empty mapping of checks",
            value,
            allowed=allowed,
        )
        return None
    found: dict[str, Any] = {}
    ok = True
    for k, v in value.items():
        sub = join(key, k)
        if k in COMMAND_KEYS and not command:
            ctx.error(
                sub,
                f"{k} checks a command's result, but an `expect:` step runs no command; "
                "put this expect block on the merge/unmerge/refresh/sysext/run step it checks",
                v,
                allowed=STATE_KEYS,
            )
            ok = False
            continue
        if k not in allowed:
            ctx.error(sub, "unknown expectation", k, allowed=allowed)
            ok = False
            continue
        checked = maybe_versioned(ctx, sub, v, EXPECT_REGISTRY[k].validate)
        if checked is INVALID:
            ok = False
        else:
            found[k] = checked
    return Expectation(**found) if ok else None


def check_command(expect: Expectation | None, result: CommandOutput) -> list[Failure]:
    """Exit code and output checks. Without `exit:` the command must exit 0.

    `expect` must already be resolved for the target's systemd version.
    """
    block = expect if expect is not None else Expectation()
    failures: list[Failure] = []
    for key in _COMMAND:
        failures += key.check(block, result)
    return failures


def check_state(expect: Expectation, run: Run) -> list[Failure]:
    """Every guest-state key of a resolved `expect` block, in a fixed order."""
    failures: list[Failure] = []
    for key in _STATE:
        if key.check is not None:
            failures += key.check(expect, run)
    return failures
