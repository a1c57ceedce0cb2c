"""Step runner and expectations, driven against a scripted fake machine (no VM)."""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import AssertionFailed, ConfigErrors, HarnessError
from harness.extensions.model import Artifact
from harness.scenario import load_scenario, run_scenario
from harness.scenario.expectations import parse_status_json


@dataclass
class Result:
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


Reply = Result | Callable[[str], Result]


@dataclass
class FakeMachine:
    """Answers commands from a script of (regex, reply); unmatched commands succeed."""

    script: list[tuple[str, Reply]] = field(default_factory=list)
    name: str = "fake"
    commands: list[str] = field(default_factory=list)
    copies: list[tuple[Path, str]] = field(default_factory=list)
    reboots: int = 0
    shutdowns: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def execute(self, command: str, timeout: float = 120) -> Result:
        self.commands.append(command)
        self.events.append(f"exec {command}")
        for pattern, reply in self.script:
            if re.search(pattern, command):
                return reply(command) if callable(reply) else reply
        return Result()

    def succeed(self, command: str, timeout: float = 120) -> str:
        res = self.execute(command, timeout)
        if res.exit_code:
            raise AssertionFailed(command)
        return res.stdout

    def copy_to(self, local: Path, remote: str) -> None:
        self.copies.append((local, remote))
        self.events.append(f"copy {remote}")

    def reboot(self, timeout: float | None = None, *, shutdown: str = "clean") -> None:
        self.shutdowns.append(shutdown)
        self.reboots += 1
        self.events.append("reboot")

    def log(self, message: str) -> None:
        self.messages.append(message)

    def console_log(self) -> str:
        return ""

    @contextlib.contextmanager
    def nested(self, title: str) -> Iterator[None]:
        self.log(title)
        yield


def status(usr: list[str] | str = "none", opt: list[str] | str = "none") -> Result:
    return Result(0, json.dumps([
        {"hierarchy": "/opt", "extensions": opt, "since": None},
        {"hierarchy": "/usr", "extensions": usr, "since": 1 if usr != "none" else None},
    ]))


def target(systemd: int = 257, persona: str = "flatcar", ext_dir: str = "/etc/extensions"):
    return SimpleNamespace(
        name=f"refos-{systemd}-{persona}",
        systemd_version=systemd,
        persona=SimpleNamespace(name=persona),
        default_extension_dir=ext_dir,
        os_release={"ID": persona},
    )


def scenario(tmp_path: Path, *parts: str):
    """Write the YAML fragments (each dedented on its own) as demo.yaml and load it."""
    path = tmp_path / "demo.yaml"
    path.write_text("".join(textwrap.dedent(p) for p in parts))
    return load_scenario(path)


def artifact(tmp_path: Path, name: str = "hello", fmt: str = "squashfs") -> Artifact:
    if fmt == "directory":
        path = tmp_path / name
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path / f"{name}.raw"
        path.write_bytes(b"x")
    return Artifact(name=name, path=path, format=fmt, digest="0")


HELLO = """\
    extensions:
      hello:
        files: [{path: /usr/bin/hello, content: "#!/bin/sh\\necho hello\\n", mode: "0755"}]
"""


# ------------------------------------------------------------------------- happy path


def test_happy_path_runs_steps_in_order_and_logs(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: merge and check
    """, HELLO, """\
        steps:
          - install: hello
          - merge
          - run: hello
            expect: {stdout_contains: hello, exit: 0}
          - expect:
              merged: [hello]
              read_only: [/usr]
              writable: [/etc]
              files_present: [/usr/bin/hello]
              file_contains: {/usr/bin/hello: "echo hello"}
          - reboot
          - unmerge
    """)
    m = FakeMachine([
        (r"^systemd-sysext status", status(["hello"])),
        (r"touch /usr/", Result(1, "", "touch: cannot touch '/usr/.sysext-harness-probe': "
                                    "Read-only file system\n")),
        (r"^hello$", Result(0, "hello\n")),
        (r"^cat /usr/bin/hello", Result(0, "#!/bin/sh\necho hello\n")),
    ])
    log = tmp_path / "logs" / "steps.log"
    run_scenario(s, m, target(), {"hello": artifact(tmp_path)}, log_path=log)

    assert m.copies == [(tmp_path / "hello.raw", "/etc/extensions/hello.raw")]
    assert m.events[:2] == [
        "exec rm -rf /etc/extensions/hello.raw",
        "copy /etc/extensions/hello.raw",
    ]
    assert "exec systemd-sysext merge" in m.events
    assert m.reboots == 1
    assert m.shutdowns == ["reset"]  # the default: sync, then reset (docs/targets.md)
    assert m.events[-1] == "exec systemd-sysext unmerge"
    assert "rm -f /etc/.sysext-harness-probe" in m.commands
    assert not any(c.startswith("rm -f /usr/") for c in m.commands)
    assert any("step 2/6 (merge)" in msg for msg in m.messages)
    text = log.read_text()
    assert "== step 1/6 (install hello)" in text
    assert "$ systemd-sysext merge\n[exit 0]" in text
    assert "-- ok" in text and "passed" in text


def test_install_dir_as_and_directory_artifact(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        extensions:
          dirext: {format: directory}
          conf: {type: confext}
        steps:
          - install: dirext
            dir: /var/lib/extensions
            as: renamed
          - install: dirext
          - install: conf
    """)
    m = FakeMachine()
    arts = {
        "dirext": artifact(tmp_path, "dirext", "directory"),
        "conf": artifact(tmp_path, "conf"),
    }
    run_scenario(s, m, target(ext_dir="/opt/ext"), arts)
    assert [r for _, r in m.copies] == [
        "/var/lib/extensions/renamed",
        "/opt/ext/dirext",
        "/var/lib/confexts/conf.raw",
    ]
    assert "rm -rf /var/lib/extensions/renamed" in m.commands


def test_setup_steps_quote_paths(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - symlink: /etc/extensions/b b.raw
            to: /opt/extensions/b/b-1.2.3-x86-64.raw
          - remove: /etc/extensions/hello.raw
          - mkdir: /etc/extensions/hello
    """)
    m = FakeMachine()
    run_scenario(s, m, target(), {})
    assert m.commands == [
        "mkdir -p /etc/extensions && rm -rf '/etc/extensions/b b.raw' && "
        "ln -s /opt/extensions/b/b-1.2.3-x86-64.raw '/etc/extensions/b b.raw'",
        "rm -rf /etc/extensions/hello.raw",
        "mkdir -p /etc/extensions/hello",
    ]


# --------------------------------------------------------------------------- failures


def test_nonzero_exit_without_expect_fails_with_output(tmp_path: Path) -> None:
    s = scenario(tmp_path, "description: d\nsteps: [unmerge, merge, refresh]\n")
    m = FakeMachine([
        (r"merge$", Result(1, "", "Hierarchy '/usr' is already merged.\n")),
    ])
    m.script.insert(0, (r"unmerge$", Result(0)))
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    text = str(info.value)
    assert text.startswith("step 2 (merge): expected exit 0, got 1\n")
    assert "$ systemd-sysext merge" in text
    assert "already merged" in text
    assert "systemd-sysext refresh" not in m.commands  # stops at the first failure


def test_expected_exit_and_output(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - merge:
            expect:
              exit: 1
              output_contains: already merged
              output_matches: "^Hierarchy '/usr'"
              stdout_not_contains: Merged
    """)
    m = FakeMachine([(r"merge", Result(1, "", "Hierarchy '/usr' is already merged.\n"))])
    run_scenario(s, m, target(), {})

    m = FakeMachine([(r"merge", Result(0, "Merged\n", ""))])
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    text = str(info.value)
    assert text.startswith("step 1 (merge): 4 expectations failed\n")
    assert "expected exit 1, got 0" in text
    assert "output does not contain 'already merged'" in text
    assert "does not match regex" in text
    assert "stdout contains 'Merged'" in text


def test_by_systemd_resolves_per_target(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - sysext: merge --mutable=yes
            expect:
              # --mutable= is new in 256 (sysext-behaviour.md 5.2)
              exit: {by_systemd: {"<=255": 1, ">=256": 0}}
    """)
    ok = FakeMachine()
    run_scenario(s, ok, target(257), {})
    rejected = FakeMachine([(r"mutable", Result(1, "", "unrecognized option"))])
    run_scenario(s, rejected, target(252), {})
    with pytest.raises(AssertionFailed, match="expected exit 1, got 0"):
        run_scenario(s, FakeMachine(), target(254), {})


def test_by_systemd_without_match_fails_before_any_step(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - merge
          - refresh:
            expect: {exit: {by_systemd: {">=256": 0}}}
    """)
    m = FakeMachine()
    with pytest.raises(ConfigErrors) as info:
        run_scenario(s, m, target(252), {})
    err = info.value.errors[0]
    assert err.key == "steps[1].expect.exit"
    assert "scenario demo" in err.message and "step 2 (refresh)" in err.message
    assert "systemd 252" in err.message and "refos-252-flatcar" in err.message
    assert m.commands == []


def test_when_skips_step_and_its_expectations(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - sysext: merge --mutable=yes
            when: {systemd: ">=256"}
            expect: {exit: {by_systemd: {">=256": 0}}}
          - merge
    """)
    m = FakeMachine()
    log = tmp_path / "l.log"
    run_scenario(s, m, target(252), {}, log_path=log)
    assert m.commands == ["systemd-sysext merge"]
    assert "skipped, needs systemd >=256, target has 252" in log.read_text()
    assert any("skipped" in msg for msg in m.messages)


def test_setup_failure_is_harness_error_not_assertion(tmp_path: Path) -> None:
    s = scenario(tmp_path, "description: d\nsteps: [{mkdir: /usr/x}]\n")
    m = FakeMachine([(r"mkdir", Result(1, "", "mkdir: Read-only file system"))])
    with pytest.raises(HarnessError) as info:
        run_scenario(s, m, target(), {})
    assert not isinstance(info.value, AssertionFailed)
    assert "step 1 (mkdir /usr/x)" in str(info.value)
    assert "Read-only file system" in str(info.value)


def test_missing_artifact_is_harness_error(tmp_path: Path) -> None:
    s = scenario(tmp_path, "description: d\n", HELLO, "steps: [{install: hello}]\n")
    m = FakeMachine()
    with pytest.raises(HarnessError, match="no built artifact for hello"):
        run_scenario(s, m, target(), {})
    assert m.commands == []


def test_log_records_failure(tmp_path: Path) -> None:
    s = scenario(tmp_path, "description: d\nsteps: [merge]\n")
    log = tmp_path / "l.log"
    with pytest.raises(AssertionFailed):
        run_scenario(s, FakeMachine([(r"merge", Result(3, "", "boom"))]), target(), {},
                     log_path=log)
    text = log.read_text()
    assert "-- FAILED" in text and "boom" in text
    assert "$ systemd-sysext status; systemd-sysext list" in text  # diagnostics


# ----------------------------------------------------------------------- expectations


def test_merged_mismatch_names_missing_and_unexpected(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect: {merged: [a, b], merged_into: {/opt: []}}
    """)
    m = FakeMachine([(r"status --json", status(["a", "c"], ["x"]))])
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    text = str(info.value)
    assert "merged into /usr: expected [a, b], got [a, c] (missing [b]; unexpected [c])" in text
    assert "merged into /opt: expected nothing, got [x]" in text
    assert "$ systemd-sysext status --json=short" in text
    assert m.commands.count("systemd-sysext status --json=short") == 1


def test_merged_falls_back_to_metadata_file(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect: {merged: [a, b]}
    """)
    m = FakeMachine([
        (r"status --json", Result(0, '{"unexpected": true}')),
        (r"/usr/.systemd-sysext/extensions", Result(0, "a\nb\n")),
    ])
    run_scenario(s, m, target(252), {})
    assert any(".systemd-sysext/extensions" in c for c in m.commands)

    m = FakeMachine([(r"status --json", Result(1, "", "Unknown verb"))])
    with pytest.raises(AssertionFailed, match="expected \\[a, b\\], got nothing"):
        run_scenario(s, m, target(252), {})


def test_confext_hierarchy_uses_confext_status(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect: {merged_into: {/etc: [conf]}}
    """)
    m = FakeMachine([(r"^systemd-confext status", Result(0, json.dumps(
        [{"hierarchy": "/etc", "extensions": ["conf"], "since": 1}])))])
    run_scenario(s, m, target(), {})
    assert m.commands == ["systemd-confext status --json=short"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"hierarchy":"/opt","extensions":"none","since":null},'
         '{"hierarchy":"/usr","extensions":["a"],"since":1}]',
         {"/opt": frozenset(), "/usr": frozenset({"a"})}),
        ('{"hierarchy":"/usr","extensions":["a","b"]}', {"/usr": frozenset({"a", "b"})}),
        ('{"hierarchy":"/usr","extensions":[]}\n{"hierarchy":"/opt","extensions":"none"}\n',
         {"/usr": frozenset(), "/opt": frozenset()}),
        ('[{"hierarchy":"/usr","extensions":"a b"}]', None),
        ('[{"hierarchy":"/usr","extensions":null}]', None),
        ('{"usr": ["a"]}', None),
        ("[]", None),
        ("", None),
        ("not json", None),
    ],
)
def test_parse_status_json(text: str, expected: dict | None) -> None:
    assert parse_status_json(text) == expected


def test_read_only_and_writable_probes(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect: {read_only: [/usr], writable: [/var]}
    """)
    m = FakeMachine([(r"touch", Result(0))])  # everything writable
    with pytest.raises(AssertionFailed, match="/usr is writable, expected read-only"):
        run_scenario(s, m, target(), {})
    assert "rm -f /usr/.sysext-harness-probe" in m.commands  # probe not left behind

    m = FakeMachine([(r"touch", Result(1, "", "touch: Permission denied"))])
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    assert "not with EROFS" in str(info.value)
    assert "/var is not writable" in str(info.value)


def test_files_and_units(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect:
              files_present: [/usr/bin/a, /usr/bin/b]
              files_absent: [/usr/bin/c]
              unit_state: {hello.service: active}
    """)

    def files(command: str) -> Result:
        if "then :" in command:  # presence check prints missing paths
            return Result(0, "/usr/bin/b\n")
        return Result(0, "/usr/bin/c\n")  # absence check prints paths that exist

    m = FakeMachine([
        (r"^for p in", files),
        (r"is-active", Result(3, "inactive\n")),
    ])
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    text = str(info.value)
    assert "3 expectations failed" in text
    assert "missing: /usr/bin/b" in text
    assert "present, but expected absent: /usr/bin/c" in text
    assert "hello.service is inactive, expected active" in text
    assert "$ systemctl status --no-pager --full hello.service" in text


def test_state_checks_on_command_step(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - refresh:
            expect: {merged: []}
    """)
    m = FakeMachine([(r"status", status(["a"]))])
    with pytest.raises(AssertionFailed, match="expected nothing, got \\[a\\]"):
        run_scenario(s, m, target(), {})


def test_log_shares_file_with_machine_logger(tmp_path: Path) -> None:
    """The session hands the same file to the machine logger; neither may clobber the other."""
    log = tmp_path / "steps.log"
    log.write_text("[fake] ready\n")

    class LoggingMachine(FakeMachine):
        def log(self, message: str) -> None:
            with open(log, "a") as f:
                f.write(f"[fake] {message}\n")

    s = scenario(tmp_path, "description: d\nsteps: [merge, unmerge]\n")
    run_scenario(s, LoggingMachine(), target(), {}, log_path=log)
    text = log.read_text()
    assert text.startswith("[fake] ready\n")
    assert "[fake] step 1/2 (merge)\n" in text and "[fake] step 2/2 (unmerge)\n" in text
    assert "$ systemd-sysext merge\n[exit 0]\n" in text
    assert "$ systemd-sysext unmerge\n[exit 0]\n" in text


# ------------------------------------------------------------ fixtures and memory


MOUNTINFO = """\
26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
27 26 254:16 / /usr ro,noatime shared:2 - ext4 /dev/vdb ro
40 27 0:25 /share /usr/share rw,nosuid shared:12 - tmpfs tmpfs rw,mode=755
41 27 0:25 /share /usr/share ro,nosuid shared:12 - tmpfs tmpfs rw,mode=755
42 26 0:40 / /opt/my\\040dir rw - tmpfs tmpfs rw
"""


def test_fixture_steps_run_the_commands_they_say(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - mkdir: /var/lib/extensions.mutable/opt
            mode: "0700"
          - write: /etc/systemd/sysext.conf
            content: "[SysExt]\\nMutable=auto\\n"
            owner: root:root
          - mount: /usr/share
            source: /run/share
            options: ro
          - mount: /opt/outer
            fstype: tmpfs
          - umount: /usr/share
            lazy: true
          - move_aside: /opt
    """)
    m = FakeMachine()
    run_scenario(s, m, target(), {})
    assert m.commands == [
        "mkdir -p /var/lib/extensions.mutable/opt && chmod 0700 /var/lib/extensions.mutable/opt",
        "mkdir -p /etc/systemd",
        "chmod 0644 /etc/systemd/sysext.conf",
        "chmod 0644 /etc/systemd/sysext.conf && chown root:root /etc/systemd/sysext.conf",
        "mkdir -p /usr/share && mount --bind /run/share /usr/share && "
        "mount -o remount,bind,ro /usr/share",
        "mkdir -p /opt/outer && mount -t tmpfs tmpfs /opt/outer",
        "umount -l /usr/share",
        "if [ -e /opt ] || [ -L /opt ]; then mv -T /opt /opt.sysext-harness-aside; fi",
    ]
    assert m.copies[0][1] == "/etc/systemd/sysext.conf"


def test_mounted_checks_the_topmost_mount(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect:
              mounted:
                /usr/share: {fstype: tmpfs, options: [ro, nosuid], source: tmpfs}
                /opt/my dir: {}
              not_mounted: [/opt]
    """)
    m = FakeMachine([(r"mountinfo", Result(0, MOUNTINFO))])
    run_scenario(s, m, target(), {})

    s = scenario(tmp_path, """\
        description: d
        steps:
          - expect:
              mounted: {/usr: {fstype: overlay, options: rw}, /usr/share: {source: /run/share},
                        /opt: null}
              not_mounted: /usr
    """)
    m = FakeMachine([(r"mountinfo", Result(0, MOUNTINFO)),
                     (r"^stat", Result(0, "25:7\n25:8\n"))])
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    text = str(info.value)
    assert "/usr: mounted as ext4, expected overlay" in text
    assert "/usr: mount options lack rw" in text
    assert "/usr/share does not show /run/share" in text
    assert "/opt is not a mount point" in text
    assert "/usr is a mount point (ext4 from /dev/vdb), expected none" in text


def test_remember_then_changed_and_unchanged(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - remember: {pid: "systemctl show -P MainPID a.service", mode: "stat -c %a /opt"}
          - merge
          - expect: {changed: pid, unchanged: [mode]}
    """)
    pids = iter(["100\n", "200\n"])
    m = FakeMachine([(r"MainPID", lambda _: Result(0, next(pids))),
                     (r"^stat", Result(0, "755\n"))])
    run_scenario(s, m, target(), {})

    pids = iter(["100\n", "100\n"])
    modes = iter(["755\n", "700\n"])
    m = FakeMachine([(r"MainPID", lambda _: Result(0, next(pids))),
                     (r"^stat", lambda _: Result(0, next(modes)))])
    with pytest.raises(AssertionFailed) as info:
        run_scenario(s, m, target(), {})
    assert "pid did not change: still '100'" in str(info.value)
    assert "mode changed: was '755', now '700'" in str(info.value)


def test_remember_fails_when_its_command_fails(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - remember: {pid: "systemctl show -P MainPID a.service"}
    """)
    m = FakeMachine([(r"MainPID", Result(1, "", "no such unit"))])
    with pytest.raises(AssertionFailed, match="the command to remember pid failed"):
        run_scenario(s, m, target(), {})


def test_unchanged_after_a_skipped_remember_says_so(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - remember: {pid: "true"}
            when: {systemd: ">=300"}
          - expect: {unchanged: pid}
    """)
    with pytest.raises(AssertionFailed, match="nothing remembered as 'pid'"):
        run_scenario(s, FakeMachine(), target(), {})


def test_root_tree_for_commands_and_merged_checks(tmp_path: Path) -> None:
    s = scenario(tmp_path, """\
        description: d
        steps:
          - merge:
            root: /tmp/fake root
            expect: {merged_into: {/opt: [a]}}
          - expect: {merged_into: {/opt: []}}
            root: /tmp/fake root
    """)
    answers = iter([Result(0, json.dumps([{"hierarchy": "/tmp/fake root/opt",
                                            "extensions": ["a"], "since": 1}])),
                    Result(0, json.dumps([{"hierarchy": "/opt", "extensions": "none",
                                            "since": None}]))])
    m = FakeMachine([(r"status", lambda _: next(answers))])
    run_scenario(s, m, target(), {})
    assert m.commands == [
        "systemd-sysext --root='/tmp/fake root' merge",
        "systemd-sysext --root='/tmp/fake root' status --json=short",
        "systemd-sysext --root='/tmp/fake root' status --json=short",
    ]
