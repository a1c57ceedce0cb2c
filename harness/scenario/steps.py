"""Step kinds: one record per kind of step, and every table about steps derived from them.

A record (`StepKind`) says how a step is written (its action names, whether it may be
a bare word, its extra keys, whether it takes `expect:`), how its YAML becomes a `Step`
(`parse`) and what the runner does with it (`run`). The loader and the runner consult
only `STEP_KINDS`, so a new kind of step is its dataclass in `model.py` plus one record
in `_KINDS` here, with its parser and handler next to it.

Dependencies run one way: model <- values <- expectations <- steps <- loader, runner.
The handlers see the runner only through `RunContext`.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from harness.errors import AssertionFailed, HarnessError
from harness.scenario.expectations import (
    REMEMBERED_NAME,
    CommandOutput,
    Evidence,
    Failure,
    Run,
    check_command,
    check_state,
    failure_message,
    format_command,
    parse_expect,
)
from harness.scenario.model import (
    CONFEXT_VERBS,
    DEFAULT_SHUTDOWN,
    FREE_EXTENSION_TOOLS,
    SHUTDOWNS,
    SWITCH_USR_SLOT,
    SYSEXT_VERBS,
    ChannelStep,
    CommandStep,
    Expectation,
    ExpectStep,
    InstallStep,
    MkdirStep,
    MountStep,
    MoveAsideStep,
    OsUpdateStep,
    RebootStep,
    RememberStep,
    RemoveStep,
    RunStep,
    Scenario,
    Step,
    SymlinkStep,
    SysextStep,
    SysupdateStep,
    TargetLike,
    TrustCertificateStep,
    UmountStep,
    WriteStep,
)
from harness.scenario.values import (
    FILE_NAME_HELP,
    Ctx,
    abs_path,
    join,
    nonempty_str,
    type_name,
)

if TYPE_CHECKING:
    from harness.extensions.build import Artifact
    from harness.sysupdate.model import ChannelSpec

# Where `install` puts a confext when the step names no `dir:`: the persona's default
# directory is a sysext directory, which systemd-confext never reads (it has no
# /etc/confexts); /var/lib/confexts is searched by every confext-capable version.
DEFAULT_CONFEXT_DIR = "/var/lib/confexts"
# The /usr slot each OS update action boots.
OS_UPDATE_SLOTS: Mapping[str, str] = MappingProxyType({"os_update": "B", "os_rollback": "A"})


# ------------------------------------------------------------ what handlers can use


class Machine(Protocol):
    """The slice of `harness.machine` the runner uses."""

    name: str

    def execute(self, command: str, timeout: float = 120) -> CommandOutput: ...

    def succeed(self, command: str, timeout: float = 120) -> str: ...

    def copy_to(self, local: Path, remote: str) -> None: ...

    def reboot(self, timeout: float | None = None, *, shutdown: str = "clean") -> None: ...

    def log(self, message: str) -> None: ...

    def console_log(self) -> str:
        """What the serial console printed since the machine started (the health check)."""
        ...

    def nested(self, title: str) -> AbstractContextManager[None]:
        """A timed, indented block of the machine log."""
        ...


class Channel(Protocol):
    """The slice of `harness.sysupdate.channel.UpdateChannel` the runner uses."""

    def guest_files(self) -> list[tuple[str, bytes]]: ...

    def guest_directories(self) -> list[str]: ...

    def publish(self, component: str, version: str) -> list[str]: ...

    def tamper(self, component: str, version: str) -> list[str]: ...


class RunnerTarget(TargetLike, Protocol):
    @property
    def default_extension_dir(self) -> str: ...


class StepLog(Protocol):
    def write(self, text: str) -> None: ...


class RunContext(Protocol):
    """What a step handler may use of a running scenario (the runner's `_Run`)."""

    @property
    def scenario(self) -> Scenario: ...

    @property
    def machine(self) -> Machine: ...

    @property
    def target(self) -> RunnerTarget: ...

    @property
    def artifacts(self) -> Mapping[str, Artifact]: ...

    @property
    def resolved(self) -> Mapping[int, Expectation]: ...

    @property
    def log(self) -> StepLog: ...

    @property
    def channel(self) -> Channel | None: ...

    @property
    def certificate(self) -> Callable[[], bytes] | None: ...

    def guest(self, command: str, timeout: float) -> CommandOutput:
        """Run a guest command and put it in the step log."""
        ...

    def setup(self, step: Step | None, command: str) -> None:
        """A set-up command: failing is a harness error, not an expectation failure."""
        ...

    def probe(self, step: Step) -> Run:
        """The command runner state checks use."""
        ...

    def copy_bytes(self, content: bytes, remote: str) -> None:
        """Put `content` at `remote` (mode 0644), logging the copy."""
        ...

    def remember(self, name: str, command: str, value: str) -> None:
        """Keep a `remember` step's value for later `unchanged:`/`changed:` checks."""
        ...


# ------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class StepSource:
    """One step's YAML as a kind's parser gets it; the loader already checked which keys
    it has and the common ones (`name`, `when`, `timeout`)."""

    key: str  # e.g. steps[3]
    action: str  # the action key written, e.g. merge
    raw: Mapping[Any, Any]  # the whole step mapping
    common: Mapping[str, Any]  # index, name, when, timeout: pass on as **common
    expect: Expectation | None  # a command step's parsed `expect:`
    extension_names: Sequence[str]  # the scenario's `extensions:`
    channel: ChannelSpec | None  # the scenario's `update_channel:`

    @property
    def value(self) -> object:
        """What follows the action key (None for a bare word)."""
        return self.raw[self.action]

    @property
    def value_key(self) -> str:
        return join(self.key, self.action)

    def sub(self, name: str) -> str:
        return join(self.key, name)


S = TypeVar("S", bound=Step)


@dataclass(frozen=True)
class StepKind(Generic[S]):
    """Everything about one kind of step; see the module docstring."""

    actions: tuple[str, ...]  # the action keys that make a step of this kind
    parse: Callable[[Ctx, StepSource], S | None]  # report through ctx, None on error
    run: Callable[[RunContext, S], None]  # raise AssertionFailed or HarnessError
    bare: bool = False  # may be written as a bare word, e.g. `- merge`
    keys: tuple[str, ...] = ()  # keys besides the action, `expect` and the common ones
    command: bool = False  # runs one command whose result `expect:` may check

    @property
    def extra_keys(self) -> tuple[str, ...]:
        """The keys a step of this kind may have besides its action and the common ones."""
        return self.keys + (("expect",) if self.command else ())


# ------------------------------------------------------------------ set-up steps


def _parse_install(ctx: Ctx, s: StepSource) -> InstallStep | None:
    ok = True
    name = s.value
    if not isinstance(name, str) or name not in s.extension_names:
        known = ", ".join(s.extension_names) if s.extension_names else "(none defined)"
        ctx.error(s.value_key, "install names an extension not defined under `extensions:`",
                  name, allowed=known)
        ok = False
    directory = None
    if "dir" in s.raw:
        directory = abs_path(ctx, s.sub("dir"), s.raw["dir"], allow_root=False)
        ok = ok and directory is not None
    as_name = None
    if "as" in s.raw:
        as_name = s.raw["as"]
        if (
            not isinstance(as_name, str)
            or not as_name
            or "/" in as_name
            or as_name in (".", "..")
        ):
            ctx.error(s.sub("as"), "invalid file name", as_name, allowed=FILE_NAME_HELP)
            ok = False
    if not ok:
        return None
    assert isinstance(name, str)
    return InstallStep(extension=name, dir=directory, as_name=as_name, **s.common)


def _run_install(run: RunContext, step: InstallStep) -> None:
    artifact = run.artifacts[step.extension]
    spec = run.scenario.extensions.get(step.extension)
    default_dir = run.target.default_extension_dir
    if spec is not None and getattr(spec, "type", "sysext") == "confext":
        default_dir = DEFAULT_CONFEXT_DIR
    dest = step.destination(default_dir, artifact.filename)
    # Replace whatever is there: copying a directory onto an existing one would mix trees.
    run.setup(step, f"rm -rf {shlex.quote(dest)}")
    run.log.write(f"(copy {artifact.format} {artifact.path} -> {dest})")
    run.machine.copy_to(Path(artifact.path), dest)


def _parse_symlink(ctx: Ctx, s: StepSource) -> SymlinkStep | None:
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    if "to" not in s.raw:
        ctx.error(s.sub("to"), "a symlink step needs `to:` (the link target)",
                  allowed="an absolute or relative path")
        target = None
    else:
        target = nonempty_str(ctx, s.sub("to"), s.raw["to"], "to")
    if path and target:
        return SymlinkStep(path=path, to=target, **s.common)
    return None


def _run_symlink(run: RunContext, step: SymlinkStep) -> None:
    path = shlex.quote(step.path)
    parent = shlex.quote(posixpath.dirname(step.path) or "/")
    run.setup(step, f"mkdir -p {parent} && rm -rf {path} && ln -s {shlex.quote(step.to)} {path}")


def _parse_remove(ctx: Ctx, s: StepSource) -> RemoveStep | None:
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    return RemoveStep(path=path, **s.common) if path else None


def _run_remove(run: RunContext, step: RemoveStep) -> None:
    run.setup(step, f"rm -rf {shlex.quote(step.path)}")


MODE = re.compile(r"[0-7]{3,4}")
MODE_HELP = 'octal digits in quotes, e.g. "0755" (unquoted, YAML reads 0755 as a number)'


def _parse_mode(ctx: Ctx, s: StepSource) -> str | None:
    """A step's `mode:`; "" when absent, None (reported) when invalid."""
    if "mode" not in s.raw:
        return ""
    mode = s.raw["mode"]
    if isinstance(mode, str) and MODE.fullmatch(mode):
        return mode
    ctx.error(s.sub("mode"), "not a file mode", mode, allowed=MODE_HELP)
    return None


def _parse_mkdir(ctx: Ctx, s: StepSource) -> MkdirStep | None:
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    mode = _parse_mode(ctx, s)
    if not path or mode is None:
        return None
    return MkdirStep(path=path, mode=mode or None, **s.common)


def _run_mkdir(run: RunContext, step: MkdirStep) -> None:
    path = shlex.quote(step.path)
    chmod = f" && chmod {step.mode} {path}" if step.mode else ""
    run.setup(step, f"mkdir -p {path}{chmod}")


OWNER = re.compile(r"[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?|[0-9]+(:[0-9]+)?")


def _parse_write(ctx: Ctx, s: StepSource) -> WriteStep | None:
    """`write: PATH` with `content:` and optionally `mode:` and `owner:`."""
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    ok = path is not None
    content = s.raw.get("content")
    if not isinstance(content, str):
        ctx.error(s.sub("content"), "a write step needs `content:`, a string", content,
                  allowed='the file\'s text, e.g. "[SysExt]\\nMutable=auto\\n" or a | block')
        ok = False
    mode = _parse_mode(ctx, s)
    owner = s.raw.get("owner")
    if owner is not None and not (isinstance(owner, str) and OWNER.fullmatch(owner)):
        ctx.error(s.sub("owner"), "not an owner", owner,
                  allowed="user or user:group, by name or number, e.g. root:root or 0:0")
        ok = False
    if not ok or mode is None:
        return None
    assert path is not None and isinstance(content, str)
    return WriteStep(path=path, content=content, mode=mode or "0644", owner=owner,
                     **s.common)


def _run_write(run: RunContext, step: WriteStep) -> None:
    path = shlex.quote(step.path)
    run.setup(step, f"mkdir -p {shlex.quote(posixpath.dirname(step.path))}")
    run.copy_bytes(step.content.encode(), step.path)
    chown = f" && chown {step.owner} {path}" if step.owner else ""
    run.setup(step, f"chmod {step.mode} {path}{chown}")


FSTYPE = re.compile(r"[a-z0-9_.-]+")


def _parse_mount(ctx: Ctx, s: StepSource) -> MountStep | None:
    """`mount: PATH` with `source:` (a bind mount) or `fstype:`, and maybe `options:`."""
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    ok = path is not None
    allowed = "`source: DIR` (a bind mount; DIR may be the mount point itself) or `fstype: tmpfs`"
    has_source, has_fstype = "source" in s.raw, "fstype" in s.raw
    if has_source == has_fstype:
        ctx.error(s.key, "a mount step needs exactly one of `source:` and `fstype:`",
                  allowed=allowed)
        ok = False
    source = fstype = None
    if has_source:
        source = abs_path(ctx, s.sub("source"), s.raw["source"])
        ok = ok and source is not None
    if has_fstype:
        fstype = s.raw["fstype"]
        if not isinstance(fstype, str) or not FSTYPE.fullmatch(fstype):
            ctx.error(s.sub("fstype"), "not a file system type", fstype,
                      allowed="e.g. tmpfs")
            ok = False
    options = s.raw.get("options")
    if options is not None and (not isinstance(options, str) or not options
                                or any(c.isspace() for c in options)):
        ctx.error(s.sub("options"), "not mount options", options,
                  allowed='comma-separated options without spaces, e.g. "ro" or "ro,nosuid"')
        ok = False
    if not ok:
        return None
    assert path is not None
    return MountStep(path=path, source=source, fstype=fstype, options=options, **s.common)


def _run_mount(run: RunContext, step: MountStep) -> None:
    path = shlex.quote(step.path)
    if step.source is not None:
        command = f"mount --bind {shlex.quote(step.source)} {path}"
        if step.options:
            command += f" && mount -o remount,bind,{step.options} {path}"
    else:
        options = f" -o {step.options}" if step.options else ""
        command = f"mount -t {step.fstype}{options} {step.fstype} {path}"
    run.setup(step, f"mkdir -p {path} && {command}")


def _parse_umount(ctx: Ctx, s: StepSource) -> UmountStep | None:
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    lazy = s.raw.get("lazy", False)
    if not isinstance(lazy, bool):
        ctx.error(s.sub("lazy"), "must be true or false", lazy,
                  allowed="true (umount -l: detach even while busy) or false")
        return None
    return UmountStep(path=path, lazy=lazy, **s.common) if path else None


def _run_umount(run: RunContext, step: UmountStep) -> None:
    run.setup(step, f"umount {'-l ' if step.lazy else ''}{shlex.quote(step.path)}")


def _parse_move_aside(ctx: Ctx, s: StepSource) -> MoveAsideStep | None:
    path = abs_path(ctx, s.value_key, s.value, allow_root=False)
    if path in ("/usr", "/etc", "/var"):
        ctx.error(s.value_key, "moving this aside would break the guest", path,
                  allowed="a hierarchy the guest can do without, e.g. /opt")
        return None
    return MoveAsideStep(path=path, **s.common) if path else None


def _run_move_aside(run: RunContext, step: MoveAsideStep) -> None:
    path, aside = shlex.quote(step.path), shlex.quote(step.aside)
    run.setup(step, f"if [ -e {path} ] || [ -L {path} ]; then mv -T {path} {aside}; fi")


def _parse_remember(ctx: Ctx, s: StepSource) -> RememberStep | None:
    """`remember: {host_pid: "systemctl show -P MainPID x.service", opt_mode: ...}`."""
    value = s.value
    allowed = 'a mapping of names to commands, e.g. {opt_mode: "stat -c %a /opt"}'
    if not isinstance(value, dict) or not value:
        ctx.error(s.value_key, "remember needs a non-empty mapping", value, allowed=allowed)
        return None
    commands: list[tuple[str, str]] = []
    for name, command in value.items():
        sub = join(s.value_key, name)
        if not isinstance(name, str) or not REMEMBERED_NAME.fullmatch(name):
            ctx.error(sub, "not a name to remember a value by", name,
                      allowed="letters, digits, _ and -, not starting with a digit")
            return None
        checked = nonempty_str(ctx, sub, command, "a command")
        if checked is None:
            return None
        commands.append((name, checked))
    return RememberStep(commands=tuple(commands), **s.common)


def _run_remember(run: RunContext, step: RememberStep) -> None:
    for name, command in step.commands:
        result = run.guest(command, step.timeout)
        if result.exit_code != 0:
            raise AssertionFailed(failure_message(
                step.label, [Failure(f"the command to remember {name} failed")],
                Evidence.of(command, result)))
        run.remember(name, command, result.stdout.strip())
        run.log.write(f"(remembered {name} = {result.stdout.strip()!r})")


def _parse_trust(ctx: Ctx, s: StepSource) -> TrustCertificateStep | None:
    """`- trust_certificate` or `trust_certificate: {dir: /run/verity.d}`."""
    value = s.value
    if value is None:
        return TrustCertificateStep(**s.common)
    if not isinstance(value, dict) or set(value) != {"dir"}:
        ctx.error(s.value_key, "expected nothing or a mapping with `dir`", value,
                  allowed="`- trust_certificate` or `trust_certificate: {dir: /run/verity.d}`")
        return None
    directory = abs_path(ctx, f"{s.value_key}.dir", value["dir"], allow_root=False)
    return TrustCertificateStep(dir=directory, **s.common) if directory else None


def _run_trust(run: RunContext, step: TrustCertificateStep) -> None:
    if run.certificate is None:
        raise HarnessError(f"{step.label}: this run has no verity signing certificate")
    run.copy_bytes(run.certificate(), step.path)


# ---------------------------------------------------------------- command steps


def _verb_args(ctx: Ctx, key: str, value: object) -> str | None:
    """`merge`, `merge:` (null), `merge: {}` or `merge: {args: "--force"}`."""
    allowed = '`- merge`, or `merge: {args: "--force"}`'
    if value is None:
        return ""
    if not isinstance(value, dict):
        ctx.error(key, f"expected nothing or a mapping with `args`, not a {type_name(value)}",
                  value, allowed=allowed)
        return None
    ok = True
    for k in value:
        if k != "args":
            ctx.error(join(key, k), "unknown key", k, allowed="args")
            ok = False
    args = value.get("args", "")
    if args is None:
        args = ""
    if not isinstance(args, str):
        ctx.error(join(key, "args"), "args must be a string", args,
                  allowed='command-line arguments, e.g. "--force"')
        ok = False
    return args.strip() if ok else None


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_env(ctx: Ctx, s: StepSource) -> tuple[tuple[str, str], ...] | None:
    """`env: {SYSTEMD_SYSEXT_MUTABLE_MODE: ephemeral}`: variables for this one command."""
    if "env" not in s.raw:
        return ()
    key, value = s.sub("env"), s.raw["env"]
    allowed = "a mapping of variable names to strings or numbers, e.g. {SYSTEMD_LOG_LEVEL: debug}"
    if not isinstance(value, dict) or not value:
        ctx.error(key, f"expected a mapping, not a {type_name(value)}", value, allowed=allowed)
        return None
    out: list[tuple[str, str]] = []
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            ctx.error(join(key, name), "not an environment variable name", name,
                      allowed="letters, digits and _, not starting with a digit")
            return None
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            ctx.error(join(key, name), f"expected a string or a number, not a "
                      f"{type_name(item)}", item, allowed=allowed)
            return None
        out.append((name, str(item)))
    return tuple(out)


def _parse_root(ctx: Ctx, s: StepSource) -> str | None:
    """A step's `root:` (a tree to merge into, as the initrd does with /sysroot); "" when
    absent, None (reported) when invalid."""
    if "root" not in s.raw:
        return ""
    return abs_path(ctx, s.sub("root"), s.raw["root"], allow_root=False)


def _parse_sysext_verb(ctx: Ctx, s: StepSource) -> SysextStep | None:
    args = _verb_args(ctx, s.value_key, s.value)
    env = _parse_env(ctx, s)
    root = _parse_root(ctx, s)
    if args is None or env is None or root is None:
        return None
    return SysextStep(verb=s.action, args=args, env=env, root=root or None, expect=s.expect,
                      **s.common)


def _parse_sysext(ctx: Ctx, s: StepSource) -> SysextStep | None:
    args = nonempty_str(ctx, s.value_key, s.value, s.action)
    env = _parse_env(ctx, s)
    root = _parse_root(ctx, s)
    if args is None or env is None or root is None:
        return None
    return SysextStep(verb=s.action, args=args.strip(), env=env, root=root or None,
                      expect=s.expect, **s.common)


def _parse_run(ctx: Ctx, s: StepSource) -> RunStep | None:
    shell = nonempty_str(ctx, s.value_key, s.value, "run")
    return RunStep(shell=shell, expect=s.expect, **s.common) if shell is not None else None


def _parse_sysupdate(ctx: Ctx, s: StepSource) -> SysupdateStep | None:
    args = nonempty_str(ctx, s.value_key, s.value, "sysupdate")
    env = _parse_env(ctx, s)
    if args is None or env is None:
        return None
    return SysupdateStep(args=args.strip(), env=env, expect=s.expect, **s.common)


def _run_command(run: RunContext, step: CommandStep) -> None:
    """Run the step's command; check its result, then the guest state its block names."""
    command = step.command
    result = run.guest(command, step.timeout)
    expect = run.resolved.get(step.index)
    failures = check_command(expect, result)
    if expect is not None:
        failures += check_state(expect, run.probe(step))
    if failures:
        raise AssertionFailed(
            failure_message(step.label, failures, Evidence.of(command, result)))


# -------------------------------------------------------------- reboots, updates


def _no_argument(ctx: Ctx, s: StepSource) -> bool:
    """A bare word, or its key with no value (`reboot:`)."""
    if s.value is None:
        return True
    ctx.error(s.value_key, f"{s.action} takes no argument", s.value,
              allowed=f"`- {s.action}`, or `{s.action}:` with no value")
    return False


def _parse_shutdown(ctx: Ctx, s: StepSource) -> str | None:
    """A rebooting step's `shutdown:` (how the running boot ends, DEFAULT_SHUTDOWN if
    absent); None, with every mistake reported, if the step is not valid."""
    value = s.raw.get("shutdown", DEFAULT_SHUTDOWN)
    bare = _no_argument(ctx, s)
    if value not in SHUTDOWNS:
        ctx.error(s.sub("shutdown"), "unknown way to end the boot", value,
                  allowed=", ".join(SHUTDOWNS))
        return None
    return str(value) if bare else None


def _parse_reboot(ctx: Ctx, s: StepSource) -> RebootStep | None:
    shutdown = _parse_shutdown(ctx, s)
    return None if shutdown is None else RebootStep(shutdown=shutdown, **s.common)


def _run_reboot(run: RunContext, step: RebootStep) -> None:
    run.log.write(f"(reboot, shutdown: {step.shutdown})")
    run.machine.reboot(shutdown=step.shutdown)


def _parse_os_update(ctx: Ctx, s: StepSource) -> OsUpdateStep | None:
    shutdown = _parse_shutdown(ctx, s)
    if shutdown is None:
        return None
    return OsUpdateStep(slot=OS_UPDATE_SLOTS[s.action], shutdown=shutdown, **s.common)


def _run_os_update(run: RunContext, step: OsUpdateStep) -> None:
    """Switch the /usr slot, reboot, and make sure the guest came up on that slot: a
    scenario that silently stayed on the old OS would test nothing."""
    run.machine.log(f"{step.action}: switching /usr to slot {step.slot}, then reboot")
    run.setup(step, step.command)
    run.log.write(f"(reboot into /usr slot {step.slot}, shutdown: {step.shutdown})")
    run.machine.reboot(shutdown=step.shutdown)
    check = f"{SWITCH_USR_SLOT} --current"
    result = run.guest(check, step.timeout)
    if result.exit_code != 0 or result.stdout.strip() != step.slot:
        raise HarnessError(
            f"{step.label}: {run.target.name} did not come up on /usr slot {step.slot}\n"
            + format_command(check, result.exit_code, result.stdout, result.stderr)
        )
    run.machine.log(f"{step.action}: running /usr slot {step.slot}")


def _parse_channel(ctx: Ctx, s: StepSource) -> ChannelStep | None:
    """`publish: {component: hello, version: 1.3.0}` (same shape for `tamper:`)."""
    key, action, value = s.value_key, s.action, s.value
    allowed = f"`{action}: {{component: NAME, version: VERSION}}`"
    channel = s.channel
    if channel is None:
        ctx.error(key, f"`{action}` needs an `update_channel:` block in the scenario", value,
                  allowed=allowed)
        return None
    if not isinstance(value, dict) or set(value) != {"component", "version"}:
        ctx.error(key, "expected a mapping with exactly `component` and `version`", value,
                  allowed=allowed)
        return None
    component, version = value["component"], value["version"]
    if component not in channel.components:
        ctx.error(f"{key}.component", "not a component of update_channel", component,
                  allowed=", ".join(channel.components))
        return None
    if not isinstance(version, str | int | float) or not str(version).strip():
        ctx.error(f"{key}.version", "expected a version string", version, allowed="e.g. 1.3.0")
        return None
    return ChannelStep(verb=action, component=component, version=str(version), **s.common)


def _run_channel(run: RunContext, step: ChannelStep) -> None:
    if run.channel is None:  # pragma: no cover - the loader requires update_channel
        raise HarnessError(f"{step.label}: the scenario has no update channel")
    if step.verb == "publish":
        files = run.channel.publish(step.component, step.version)
    else:
        files = run.channel.tamper(step.component, step.version)
    run.log.write(f"(channel: {step.verb} {', '.join(files)})")


# ------------------------------------------------------------------------ checks


def _parse_expect_step(ctx: Ctx, s: StepSource) -> ExpectStep | None:
    block = parse_expect(ctx, s.value_key, s.value, command=False)
    root = _parse_root(ctx, s)
    if block is None or root is None:
        return None
    return ExpectStep(expect=block, root=root or None, **s.common)


def _run_expect(run: RunContext, step: ExpectStep) -> None:
    failures = check_state(run.resolved[step.index], run.probe(step))
    if failures:
        raise AssertionFailed(failure_message(step.label, failures, None))


# ---------------------------------------------------------------------- registry

# Every kind of step; this order is the order error messages list the actions in.
_KINDS: tuple[StepKind[Any], ...] = (
    StepKind(("install",), _parse_install, _run_install, keys=("dir", "as")),
    StepKind(("symlink",), _parse_symlink, _run_symlink, keys=("to",)),
    StepKind(("remove",), _parse_remove, _run_remove),
    StepKind(("mkdir",), _parse_mkdir, _run_mkdir, keys=("mode",)),
    StepKind(("write",), _parse_write, _run_write, keys=("content", "mode", "owner")),
    StepKind(("mount",), _parse_mount, _run_mount, keys=("source", "fstype", "options")),
    StepKind(("umount",), _parse_umount, _run_umount, keys=("lazy",)),
    StepKind(("move_aside",), _parse_move_aside, _run_move_aside),
    StepKind(("remember",), _parse_remember, _run_remember),
    StepKind(SYSEXT_VERBS + CONFEXT_VERBS, _parse_sysext_verb, _run_command, bare=True,
             keys=("env", "root"), command=True),
    StepKind(FREE_EXTENSION_TOOLS, _parse_sysext, _run_command, keys=("env", "root"),
             command=True),
    StepKind(("run",), _parse_run, _run_command, command=True),
    StepKind(("reboot",), _parse_reboot, _run_reboot, bare=True, keys=("shutdown",)),
    StepKind(tuple(OS_UPDATE_SLOTS), _parse_os_update, _run_os_update, bare=True,
             keys=("shutdown",)),
    StepKind(("sysupdate",), _parse_sysupdate, _run_command, keys=("env",), command=True),
    StepKind(("publish", "tamper"), _parse_channel, _run_channel),
    StepKind(("trust_certificate",), _parse_trust, _run_trust, bare=True),
    StepKind(("expect",), _parse_expect_step, _run_expect, keys=("root",)),
)
# Action key -> its kind; also how the runner finds a step's handler (`step.action`).
STEP_KINDS: Mapping[str, StepKind[Any]] = MappingProxyType(
    {action: kind for kind in _KINDS for action in kind.actions}
)
assert len(STEP_KINDS) == sum(len(k.actions) for k in _KINDS), "an action has two kinds"
ACTIONS: tuple[str, ...] = tuple(STEP_KINDS)
BARE_ACTIONS: tuple[str, ...] = tuple(a for a, k in STEP_KINDS.items() if k.bare)
COMMAND_ACTIONS: tuple[str, ...] = tuple(a for a, k in STEP_KINDS.items() if k.command)
# Keys a step may carry besides its action and the common ones.
STEP_EXTRA_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {action: kind.extra_keys for action, kind in STEP_KINDS.items()}
)
