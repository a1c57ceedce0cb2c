"""Typed, validated form of a scenario file.

Everything here is produced by `harness.scenario.loader` after full validation, so the
runner never has to second-guess its input: paths are absolute where they must be,
version constraints parse, and `by_systemd` choices are already type-checked.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from harness import versions
from harness.scenario.provisioning import Provisioning

if TYPE_CHECKING:
    from harness.extensions.spec import ExtensionSpec
    from harness.sysupdate.model import ChannelSpec

# Personas the reference targets can wear; `applies_to.personas` / `when.personas` must
# name one of these so a typo does not silently disable a scenario everywhere.
KNOWN_PERSONAS: tuple[str, ...] = ("flatcar", "fcos", "kairos")

DEFAULT_TIMEOUT: float = 120.0


class _PersonaLike(Protocol):
    @property
    def name(self) -> str: ...


class TargetLike(Protocol):
    """What scenario code needs from a target (satisfied by `harness.targets.model.Target`)."""

    @property
    def name(self) -> str: ...

    @property
    def systemd_version(self) -> int: ...

    @property
    def persona(self) -> _PersonaLike: ...


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A conjunction of target properties; an unset part always holds.

    Used for `when:` on steps; `AppliesTo` adds the scenario-level wording.
    """

    systemd: str | None = None  # harness.versions constraint, e.g. ">=254"
    personas: tuple[str, ...] = ()  # empty: any persona
    targets: tuple[str, ...] = ()  # fnmatch patterns on target names; empty: any target
    reason: str | None = None  # why the condition exists; shown with what is unmet

    @property
    def is_empty(self) -> bool:
        return self.systemd is None and not self.personas and not self.targets

    def unmet(self, target: TargetLike) -> list[str]:
        """Descriptions of every part that does not hold for `target` (empty: it holds)."""
        problems: list[str] = []
        if self.systemd is not None and not versions.matches(
            self.systemd, target.systemd_version
        ):
            problems.append(f"needs systemd {self.systemd}, target has {target.systemd_version}")
        if self.personas and target.persona.name not in self.personas:
            problems.append(
                f"needs persona {' or '.join(self.personas)}, target has {target.persona.name}"
            )
        if self.targets and not any(fnmatch.fnmatchcase(target.name, p) for p in self.targets):
            problems.append(
                f"target {target.name} matches none of {', '.join(self.targets)}"
            )
        return problems

    def holds(self, target: TargetLike) -> tuple[bool, str]:
        """(True, "") when every part holds, else (False, why) for logs and skip reasons.

        An author's `reason` usually explains one part (a version), so the unmet parts are
        always named too: a Kairos-only scenario on Flatcar must not read as a version gap.
        """
        problems = self.unmet(target)
        if not problems:
            return True, ""
        unmet = "; ".join(problems)
        return False, f"{self.reason.strip()} ({unmet})" if self.reason else unmet


@dataclass(frozen=True)
class AppliesTo(Condition):
    """Which targets a scenario is meant for; omitted in YAML means every target."""

    def applies(self, target: TargetLike) -> tuple[bool, str]:
        """(True, "") or (False, reason): the reason is what a skipped test shows."""
        return self.holds(target)


# ------------------------------------------------------------------- version-dependence


class NoVersionMatch(LookupError):
    """A `by_systemd` value has no entry for a version and no `default`."""

    def __init__(self, key: str, version: int, constraints: tuple[str, ...]) -> None:
        self.key = key
        self.version = version
        self.constraints = constraints
        super().__init__(
            f"{key}: no by_systemd entry matches systemd {version} "
            f"(entries: {', '.join(constraints)}) and there is no default"
        )


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class BySystemd:
    """A value that depends on the target's systemd version: first matching entry wins.

    A choice may be None, meaning "do not check this key on those versions".
    """

    choices: tuple[tuple[str, Any], ...]
    default: Any = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    def resolve(self, version: int, key: str) -> Any:
        for constraint, value in self.choices:
            if versions.matches(constraint, version):
                return value
        if self.has_default:
            return self.default
        raise NoVersionMatch(key, version, tuple(c for c, _ in self.choices))


# ------------------------------------------------------------------------- expectations

@dataclass(frozen=True)
class MountCheck:
    """What `mounted:` asks of the topmost mount on a path; unset parts are not checked."""

    fstype: str | None = None
    source: str | None = None  # findmnt's SOURCE, or for a bind mount the directory bound
    options: tuple[str, ...] = ()  # each must be among the mount's options, e.g. ("ro",)


@dataclass(frozen=True)
class Expectation:
    """One `expect:` block. Unset keys are None; any value may be a `BySystemd`.

    Call `resolve(version)` to get a block with only concrete values before checking.
    Each field is an `expect:` key whose validator and check are its record in
    `harness.scenario.expectations`; a unit test fails if fields and records disagree.
    """

    exit: int | BySystemd | None = None
    stdout_contains: tuple[str, ...] | BySystemd | None = None
    stdout_not_contains: tuple[str, ...] | BySystemd | None = None
    output_contains: tuple[str, ...] | BySystemd | None = None
    output_not_contains: tuple[str, ...] | BySystemd | None = None
    output_matches: tuple[str, ...] | BySystemd | None = None  # regexes, re.MULTILINE
    merged: frozenset[str] | BySystemd | None = None  # exact set merged into /usr
    merged_into: Mapping[str, frozenset[str]] | BySystemd | None = None
    files_present: tuple[str, ...] | BySystemd | None = None
    files_absent: tuple[str, ...] | BySystemd | None = None
    file_contains: Mapping[str, tuple[str, ...]] | BySystemd | None = None
    read_only: tuple[str, ...] | BySystemd | None = None
    writable: tuple[str, ...] | BySystemd | None = None
    unit_state: Mapping[str, str] | BySystemd | None = None
    mounted: Mapping[str, MountCheck] | BySystemd | None = None
    not_mounted: tuple[str, ...] | BySystemd | None = None
    unchanged: tuple[str, ...] | BySystemd | None = None  # names a `remember` step kept
    changed: tuple[str, ...] | BySystemd | None = None

    def items(self) -> list[tuple[str, Any]]:
        """The keys that are set, in declaration order."""
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self)]
        return [(name, value) for name, value in pairs if value is not None]

    def resolve(self, version: int, key_prefix: str = "expect") -> Expectation:
        """The same block with every `BySystemd` replaced by its value for `version`.

        Raises NoVersionMatch (its key is `key_prefix.<key>`) when an entry is missing.
        """
        changes = {
            name: value.resolve(version, f"{key_prefix}.{name}")
            for name, value in self.items()
            if isinstance(value, BySystemd)
        }
        return replace(self, **changes) if changes else self

    @property
    def is_versioned(self) -> bool:
        return any(isinstance(v, BySystemd) for _, v in self.items())


# -------------------------------------------------------------------------------- steps
# What each step kind is written as, how it is parsed and what it does: its record in
# `harness.scenario.steps`.


@dataclass(frozen=True, kw_only=True)
class Step:
    """Fields every step has. `index` is the 0-based position in `steps:`."""

    index: int
    name: str | None = None
    when: Condition | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def action(self) -> str:
        raise NotImplementedError

    @property
    def summary(self) -> str:
        """Short description used when the step has no `name:`."""
        return self.action

    @property
    def key(self) -> str:
        """Key path of the step in the file, e.g. `steps[3]`."""
        return f"steps[{self.index}]"

    @property
    def label(self) -> str:
        """How logs and failures name the step: 1-based number plus name or summary."""
        return f"step {self.index + 1} ({self.name or self.summary})"


@dataclass(frozen=True, kw_only=True)
class InstallStep(Step):
    """Copy a built extension into the guest."""

    extension: str
    dir: str | None = None  # None: the target's default extension directory
    as_name: str | None = None  # None: the artifact's file name

    @property
    def action(self) -> str:
        return "install"

    @property
    def summary(self) -> str:
        return f"install {self.extension}"

    def destination(self, default_dir: str, default_name: str) -> str:
        return posixpath.join(self.dir or default_dir, self.as_name or default_name)


@dataclass(frozen=True, kw_only=True)
class SymlinkStep(Step):
    path: str
    to: str

    @property
    def action(self) -> str:
        return "symlink"

    @property
    def summary(self) -> str:
        return f"symlink {self.path} -> {self.to}"


@dataclass(frozen=True, kw_only=True)
class RemoveStep(Step):
    path: str

    @property
    def action(self) -> str:
        return "remove"

    @property
    def summary(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True, kw_only=True)
class MkdirStep(Step):
    path: str
    mode: str | None = None  # octal digits, e.g. "0700"; None: the guest's umask decides

    @property
    def action(self) -> str:
        return "mkdir"

    @property
    def summary(self) -> str:
        return f"mkdir {self.path}" + (f" (mode {self.mode})" if self.mode else "")


@dataclass(frozen=True, kw_only=True)
class WriteStep(Step):
    """Put a file with exactly this content, mode and owner into the guest (a config file
    such as /etc/systemd/sysext.conf, a unit in /run), its directory created if missing."""

    path: str
    content: str
    mode: str = "0644"  # octal digits
    owner: str | None = None  # `user` or `user:group`; None: root, as copied

    @property
    def action(self) -> str:
        return "write"

    @property
    def summary(self) -> str:
        return f"write {self.path}"


@dataclass(frozen=True, kw_only=True)
class MountStep(Step):
    """A mount fixture under or over a hierarchy: a bind mount of `source` (which may be
    `path` itself, to make it read-only with `options: ro`) or a new file system of
    `fstype` (tmpfs). The mount point is created if missing."""

    path: str
    source: str | None = None  # bind mount from here
    fstype: str | None = None  # or mount a new file system of this type
    options: str | None = None  # e.g. "ro"; for a bind mount applied by a remount

    @property
    def action(self) -> str:
        return "mount"

    @property
    def summary(self) -> str:
        what = f"bind {self.source}" if self.source else self.fstype
        return f"mount {what} on {self.path}" + (f" ({self.options})" if self.options else "")


@dataclass(frozen=True, kw_only=True)
class UmountStep(Step):
    path: str
    lazy: bool = False  # umount -l: detach now, even while busy

    @property
    def action(self) -> str:
        return "umount"

    @property
    def summary(self) -> str:
        return f"umount {'-l ' if self.lazy else ''}{self.path}"


# Where `move_aside` puts a directory: next to it, so the scenario can still look at it.
ASIDE_SUFFIX = ".sysext-harness-aside"


@dataclass(frozen=True, kw_only=True)
class MoveAsideStep(Step):
    """Rename a directory (a hierarchy such as /opt) to PATH.sysext-harness-aside, so the
    scenario runs as on a host without it; nothing happens if it does not exist."""

    path: str

    @property
    def action(self) -> str:
        return "move_aside"

    @property
    def aside(self) -> str:
        return self.path + ASIDE_SUFFIX

    @property
    def summary(self) -> str:
        return f"move {self.path} aside"


@dataclass(frozen=True, kw_only=True)
class RememberStep(Step):
    """Run commands and keep their output under names, so a later `expect:` can say the
    value is `unchanged` (a mode, a mount ID) or `changed` (a unit's MainPID)."""

    commands: tuple[tuple[str, str], ...]  # (name, shell command), in the order written

    @property
    def action(self) -> str:
        return "remember"

    @property
    def summary(self) -> str:
        return "remember " + ", ".join(name for name, _ in self.commands)


@dataclass(frozen=True, kw_only=True)
class CommandStep(Step):
    """A step that runs one guest command whose exit code and output can be checked."""

    expect: Expectation | None = None

    @property
    def command(self) -> str:
        raise NotImplementedError


SYSEXT_VERBS: tuple[str, ...] = ("merge", "unmerge", "refresh")
# The same verbs for systemd-confext (254 and later), written confext_merge and so on.
CONFEXT_VERBS: tuple[str, ...] = tuple(f"confext_{verb}" for verb in SYSEXT_VERBS)
# The free invocations: `sysext: "ARGS"`, `confext: "ARGS"`.
FREE_EXTENSION_TOOLS: tuple[str, ...] = ("sysext", "confext")


def _env_assignments(env: tuple[tuple[str, str], ...]) -> list[str]:
    """`NAME=value` shell prefixes that set a step's `env:` for its one command."""
    return [f"{name}={shlex.quote(value)}" for name, value in env]


def _with_env(summary: str, env: tuple[tuple[str, str], ...]) -> str:
    """A step's summary with its `env:` in parentheses, for logs."""
    if not env:
        return summary
    return f"{summary} ({' '.join(f'{name}={value}' for name, value in env)})"


@dataclass(frozen=True, kw_only=True)
class SysextStep(CommandStep):
    """A systemd-sysext or systemd-confext invocation: `merge`, `unmerge`, `refresh`, their
    `confext_` forms (verb plus optional args), or `sysext`/`confext` (args only); `env`
    is set for that one command, as upstream's tests do with SYSTEMD_SYSEXT_* variables."""

    verb: str  # one of SYSEXT_VERBS or CONFEXT_VERBS, or one of FREE_EXTENSION_TOOLS
    args: str = ""
    env: tuple[tuple[str, str], ...] = ()
    root: str | None = None  # --root=: merge into this tree; `merged` checks read it too

    @property
    def action(self) -> str:
        return self.verb

    @property
    def tool(self) -> str:
        return "systemd-confext" if self.verb.startswith("confext") else "systemd-sysext"

    @property
    def subcommand(self) -> str:
        """merge, unmerge or refresh; empty for a free invocation."""
        return "" if self.verb in FREE_EXTENSION_TOOLS else self.verb.removeprefix("confext_")

    @property
    def command(self) -> str:
        parts = [*_env_assignments(self.env), self.tool,
                 f"--root={shlex.quote(self.root)}" if self.root else "",
                 self.subcommand, self.args]
        return " ".join(p for p in parts if p)

    @property
    def summary(self) -> str:
        text = f"{self.verb} {self.args}".rstrip() + (f" in {self.root}" if self.root else "")
        return _with_env(text, self.env)


@dataclass(frozen=True, kw_only=True)
class RunStep(CommandStep):
    shell: str

    @property
    def action(self) -> str:
        return "run"

    @property
    def command(self) -> str:
        return self.shell

    @property
    def summary(self) -> str:
        first = self.shell.strip().splitlines()[0] if self.shell.strip() else ""
        if len(first) > 50 or "\n" in self.shell.strip():
            first = first[:47] + "..."
        return f"run: {first}"


# Where `trust_certificate` puts the run's verity certificate by default: the first
# directory systemd's userspace signature check reads (sysext-behaviour reference §4.3).
DEFAULT_VERITY_DIR = "/etc/verity.d"
CERTIFICATE_NAME = "sysext-harness.crt"


@dataclass(frozen=True, kw_only=True)
class TrustCertificateStep(Step):
    """Install the run's verity signing certificate where systemd looks for trusted ones."""

    dir: str = DEFAULT_VERITY_DIR

    @property
    def action(self) -> str:
        return "trust_certificate"

    @property
    def path(self) -> str:
        return posixpath.join(self.dir, CERTIFICATE_NAME)

    @property
    def summary(self) -> str:
        return f"trust_certificate {self.path}"


# Where Debian (and upstream) install systemd-sysupdate: it is not on $PATH.
SYSUPDATE = "/usr/lib/systemd/systemd-sysupdate"


@dataclass(frozen=True, kw_only=True)
class SysupdateStep(CommandStep):
    """`sysupdate: ARGS`: run systemd-sysupdate in the guest, against the scenario's channel
    or against transfer files the scenario writes itself (upstream's TEST-72 does both);
    `env` is set for that one command (SYSTEMD_OPENPGP_KEYRING and the like)."""

    args: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def action(self) -> str:
        return "sysupdate"

    @property
    def command(self) -> str:
        return " ".join([*_env_assignments(self.env), SYSUPDATE, self.args])

    @property
    def summary(self) -> str:
        return _with_env(f"sysupdate {self.args}", self.env)


@dataclass(frozen=True, kw_only=True)
class ChannelStep(Step):
    """`publish:` (a new version appears on the channel) or `tamper:` (one byte of a
    published version's images changes after SHA256SUMS was written)."""

    verb: str  # "publish" or "tamper"
    component: str
    version: str

    @property
    def action(self) -> str:
        return self.verb

    @property
    def summary(self) -> str:
        return f"{self.verb} {self.component} {self.version}"


# How a scenario's reboots end the running boot (`shutdown:` on reboot, os_update and
# os_rollback): "reset" syncs the disks and resets the machine, "clean" runs `systemctl
# reboot` (units stop, file systems unmount). A reset is the default because sysext
# semantics are decided at boot, and it saves the shutdown's emulated time (docs/targets.md);
# a scenario about what happens at shutdown asks for "clean".
SHUTDOWNS = ("reset", "clean")
DEFAULT_SHUTDOWN = "reset"


@dataclass(frozen=True, kw_only=True)
class RebootStep(Step):
    shutdown: str = DEFAULT_SHUTDOWN  # one of SHUTDOWNS

    @property
    def action(self) -> str:
        return "reboot"


# The guest command that chooses the /usr slot of the next boot (images/overlay).
SWITCH_USR_SLOT = "/usr/lib/sysext-harness/switch-usr-slot"


@dataclass(frozen=True, kw_only=True)
class OsUpdateStep(Step):
    """`os_update` (boot /usr slot B: the persona's next release) or `os_rollback` (back to
    slot A): switch the slot, then reboot. /etc, /var and /opt persist."""

    slot: str  # "B" for os_update, "A" for os_rollback
    shutdown: str = DEFAULT_SHUTDOWN  # one of SHUTDOWNS

    @property
    def action(self) -> str:
        return "os_update" if self.slot == "B" else "os_rollback"

    @property
    def command(self) -> str:
        return f"{SWITCH_USR_SLOT} {self.slot}"

    @property
    def summary(self) -> str:
        return f"{self.action} (boot /usr slot {self.slot})"


@dataclass(frozen=True, kw_only=True)
class ExpectStep(Step):
    """A pure check of guest state (no command of its own)."""

    expect: Expectation
    root: str | None = None  # `merged` and `merged_into` read this tree's hierarchies

    @property
    def action(self) -> str:
        return "expect"


# ----------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class UpstreamCase:
    """One case of systemd's own tests that a scenario mirrors (`source:`)."""

    file: str  # one of upstream.UPSTREAM_TEST_FILES
    case: str  # what the case checks, in the words of its comment or command


@dataclass(frozen=True)
class Scenario:
    """One scenario file. `name` is the file stem and is unique within a scenario tree."""

    name: str
    path: Path
    description: str
    applies_to: AppliesTo = field(default_factory=AppliesTo)
    tags: tuple[str, ...] = ()
    extensions: Mapping[str, ExtensionSpec] = field(
        default_factory=lambda: MappingProxyType({})
    )
    steps: tuple[Step, ...] = ()
    provisioning: Provisioning | None = None  # first-boot config; None: start from a snapshot
    update_channel: ChannelSpec | None = None  # a systemd-sysupdate channel served by the host
    source: tuple[UpstreamCase, ...] = ()  # the upstream cases it mirrors
    # Journal lines the health check lets pass (harness.scenario.health): ones it provokes.
    allow_console: tuple[re.Pattern[str], ...] = ()
    # Units the health check lets be failed at the end (fnmatch globs): ones it fails.
    allow_failed_units: tuple[str, ...] = ()

    @property
    def uses_sysupdate(self) -> bool:
        """Whether it needs the guest's systemd-sysupdate: a channel or a `sysupdate` step."""
        return self.update_channel is not None or any(
            isinstance(s, SysupdateStep) for s in self.steps)

    def installed_extensions(self) -> tuple[str, ...]:
        """Extension names some `install` step uses, in first-use order."""
        seen: dict[str, None] = {}
        for step in self.steps:
            if isinstance(step, InstallStep):
                seen.setdefault(step.extension, None)
        return tuple(seen)
