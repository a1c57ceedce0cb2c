"""Scenario loading: the model it builds and every class of input mistake it reports."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import ConfigError, ConfigErrors
from harness.scenario import (
    AppliesTo,
    BySystemd,
    ExpectStep,
    InstallStep,
    MkdirStep,
    RebootStep,
    RemoveStep,
    RunStep,
    SymlinkStep,
    SysextStep,
    load_scenario,
    load_scenarios,
)
from harness.scenario.model import NoVersionMatch

HELLO = """\
extensions:
  hello:
    format: squashfs
    files: [{path: /usr/bin/hello, content: "#!/bin/sh\\necho hello\\n", mode: "0755"}]
"""


def dd(*parts: str) -> str:
    """Join YAML fragments, each dedented on its own."""
    return "".join(textwrap.dedent(p) for p in parts)


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        load_scenario(path)
    assert info.value.exit_code == 2
    return info.value.errors


def keys_of(errors: list[ConfigError]) -> list[str | None]:
    return [e.key for e in errors]


def target(name: str = "refos-257-flatcar", systemd: int = 257, persona: str = "flatcar"):
    return SimpleNamespace(
        name=name, systemd_version=systemd, persona=SimpleNamespace(name=persona)
    )


# ------------------------------------------------------------------------ valid input


def test_full_example_builds_typed_model(tmp_path: Path) -> None:
    path = write(tmp_path, dd("""\
        description: Merge, unmerge and refresh a squashfs extension.
        applies_to:
          systemd: ">=254"
          personas: [flatcar, fcos]
          targets: ["refos-*"]
          reason: needs refresh semantics of 254
        tags: [merge, formats]
    """, HELLO, """\
        steps:
          - install: hello
          - install: hello
            dir: /var/lib/extensions
            as: hi.raw
          - symlink: /etc/extensions/b.raw
            to: ../../opt/b.raw
          - remove: /etc/extensions/hello.raw
          - mkdir: /etc/extensions/hello
          - merge
          - merge: {args: "--force"}
            name: forced merge
            timeout: 30
          - unmerge
          - refresh:
          - sysext: "list --json=short"
          - run: hello
            expect: {stdout_contains: hello}
          - reboot
          - expect: {merged: [hello], files_present: /usr/bin/hello}
    """))
    s = load_scenario(path)
    assert s.name == "s"
    assert s.path == path
    assert s.description.startswith("Merge, unmerge")
    assert s.tags == ("merge", "formats")
    assert list(s.extensions) == ["hello"]
    assert s.extensions["hello"].format == "squashfs"
    assert isinstance(s.applies_to, AppliesTo)
    assert s.applies_to.systemd == ">=254"
    assert s.applies_to.personas == ("flatcar", "fcos")
    types = [type(step) for step in s.steps]
    assert types == [
        InstallStep, InstallStep, SymlinkStep, RemoveStep, MkdirStep, SysextStep,
        SysextStep, SysextStep, SysextStep, SysextStep, RunStep, RebootStep, ExpectStep,
    ]
    install = s.steps[1]
    assert isinstance(install, InstallStep)
    assert (install.dir, install.as_name) == ("/var/lib/extensions", "hi.raw")
    assert install.destination("/etc/extensions", "hello.raw") == "/var/lib/extensions/hi.raw"
    assert s.steps[0].destination("/etc/extensions", "hello.raw") == "/etc/extensions/hello.raw"
    assert s.steps[5].command == "systemd-sysext merge"
    forced = s.steps[6]
    assert forced.command == "systemd-sysext merge --force"
    assert forced.label == "step 7 (forced merge)"
    assert forced.timeout == 30
    assert s.steps[8].command == "systemd-sysext refresh"
    assert s.steps[9].command == "systemd-sysext list --json=short"
    assert s.steps[5].label == "step 6 (merge)"
    assert s.steps[10].expect.stdout_contains == ("hello",)
    final = s.steps[12]
    assert final.expect.merged == frozenset({"hello"})
    assert final.expect.files_present == ("/usr/bin/hello",)
    assert s.installed_extensions() == ("hello",)


def test_minimal_scenario_defaults(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, "description: d\nsteps: [merge]\n"))
    assert s.applies_to == AppliesTo()
    assert s.applies_to.applies(target()) == (True, "")
    assert s.tags == ()
    assert dict(s.extensions) == {}
    assert s.steps[0].timeout == 120
    assert s.steps[0].when is None


def test_applies_to_reasons(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, """\
        description: d
        applies_to: {systemd: ">=254", personas: [flatcar, fcos]}
        steps: [merge]
    """))
    assert s.applies_to.applies(target()) == (True, "")
    ok, why = s.applies_to.applies(target("refos-252-flatcar", 252))
    assert not ok and why == "needs systemd >=254, target has 252"
    ok, why = s.applies_to.applies(target("refos-257-kairos", 257, "kairos"))
    assert not ok and why == "needs persona flatcar or fcos, target has kairos"

    s = load_scenario(write(tmp_path, """\
        description: d
        applies_to: {targets: ["refos-257-*"], reason: ID_LIKE matching exists from 257 on}
        steps: [merge]
    """))
    assert s.applies_to.applies(target()) == (True, "")
    assert s.applies_to.applies(target("refos-252-fcos", 252, "fcos")) == (
        False, "ID_LIKE matching exists from 257 on "
               "(target refos-252-fcos matches none of refos-257-*)")

    # The author's reason explains the version; a persona mismatch is still named.
    s = load_scenario(write(tmp_path, """\
        description: d
        applies_to: {personas: [kairos], systemd: ">=255", reason: names end .sysext.raw}
        steps: [merge]
    """))
    assert s.applies_to.applies(target("refos-257-flatcar", 257)) == (
        False, "names end .sysext.raw (needs persona kairos, target has flatcar)")


def test_when_condition_on_step(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, """\
        description: d
        steps:
          - sysext: "merge --mutable=yes"
            when: {systemd: ">=256"}
    """))
    when = s.steps[0].when
    assert when is not None
    assert when.holds(target(systemd=257)) == (True, "")
    assert when.holds(target(systemd=252)) == (False, "needs systemd >=256, target has 252")


def test_by_systemd_values(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, """\
        description: d
        steps:
          - merge
          - sysext: "merge --force"
            expect:
              exit: {by_systemd: {"<=255": 0, ">=256": 1}}
              output_contains: {by_systemd: {">=257": "Using extensions 'b.raw'", default: null}}
              merged: {by_systemd: {252: [], default: [a]}}
    """))
    expect = s.steps[1].expect
    assert isinstance(expect.exit, BySystemd)
    assert expect.is_versioned
    r252 = expect.resolve(252)
    assert (r252.exit, r252.output_contains, r252.merged) == (0, None, frozenset())
    r257 = expect.resolve(257)
    assert r257.exit == 1
    assert r257.output_contains == ("Using extensions 'b.raw'",)
    assert r257.merged == frozenset({"a"})


def test_by_systemd_without_default_raises_no_version_match(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, """\
        description: d
        steps:
          - merge:
            expect: {exit: {by_systemd: {">=256": 1}}}
    """))
    with pytest.raises(NoVersionMatch) as info:
        s.steps[0].expect.resolve(252, "steps[0].expect")
    assert info.value.key == "steps[0].expect.exit"
    assert info.value.version == 252


def test_normalised_expectation_values(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, """\
        description: d
        steps:
          - expect:
              merged_into: {/opt: [a], /usr/: []}
              file_contains: {/usr/share/x: "text", /usr/share/y: [a, b]}
              read_only: [/usr]
              writable: /etc
              unit_state: {hello.service: active}
              files_absent: [/usr/bin/a, /usr/bin/b]
    """))
    e = s.steps[0].expect
    assert dict(e.merged_into) == {"/opt": frozenset({"a"}), "/usr": frozenset()}
    assert dict(e.file_contains) == {"/usr/share/x": ("text",), "/usr/share/y": ("a", "b")}
    assert e.writable == ("/etc",)
    assert dict(e.unit_state) == {"hello.service": "active"}


# ---------------------------------------------------------------------- invalid input


def test_all_problems_reported_at_once_with_key_paths_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path, dd("""\
        description: d
        colour: blue
        applies_to: {systemd: ">=x", personas: [flatcr]}
    """, HELLO, """\
        steps:
          - install: helo
          - {merge: null, run: ls}
          - name: nothing here
          - expect: {exit: 0, merged: [hello]}
          - merge:
            expect: {exit: 300}
    """))
    errors = errors_of(path)
    by_key = {e.key: e for e in errors}
    assert set(by_key) == {
        "colour",
        "applies_to.systemd",
        "applies_to.personas[0]",
        "steps[0].install",
        "steps[1]",
        "steps[2]",
        "steps[3].expect.exit",
        "steps[4].expect.exit",
    }
    assert "description" in by_key["colour"].allowed and "steps" in by_key["colour"].allowed
    assert by_key["steps[0].install"].allowed == "hello"
    assert by_key["steps[0].install"].value == "helo"
    allowed = set(by_key["applies_to.personas[0]"].allowed.split(", "))
    assert allowed == {"flatcar", "fcos", "kairos"}
    assert "2 actions" in by_key["steps[1]"].message
    assert "no action" in by_key["steps[2]"].message
    assert "command" in by_key["steps[3].expect.exit"].message
    assert by_key["steps[4].expect.exit"].value == 300
    # each error is placed at file:line
    assert by_key["colour"].file == f"{path}:2"
    assert by_key["steps[0].install"].file == f"{path}:9"
    assert by_key["steps[4].expect.exit"].file == f"{path}:14"
    # ... and listed in file order
    lines = [int(e.file.rsplit(":", 1)[1]) for e in errors]
    assert lines == sorted(lines)


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        ("steps: [merge]\n", "description", "missing"),
        ("description: ''\nsteps: [merge]\n", "description", "non-empty"),
        ("description: d\n", "steps", "missing"),
        ("description: d\nsteps: []\n", "steps", "non-empty"),
        ("description: d\nsteps: {a: 1}\n", "steps", "non-empty list"),
        ("description: d\nsteps: [install]\n", "steps[0]", "needs an argument"),
        ("description: d\nsteps: [dance]\n", "steps[0]", "unknown step"),
        ("description: d\nsteps: [42]\n", "steps[0]", "mapping or a bare action"),
        ("description: d\nsteps: [{merge: --force}]\n", "steps[0].merge", "args"),
        ("description: d\nsteps: [{merge: {argz: x}}]\n", "steps[0].merge.argz", "unknown"),
        ("description: d\nsteps: [{reboot: now}]\n", "steps[0].reboot", "no argument"),
        ("description: d\nsteps: [{reboot: null, shutdown: halt}]\n", "steps[0].shutdown",
         "reset, clean"),
        ("description: d\nsteps: [{os_update: null, shutdwn: clean}]\n", "steps[0].shutdwn",
         "allowed: os_update, shutdown"),
        ("description: d\nsteps: [{run: ''}]\n", "steps[0].run", "non-empty"),
        ("description: d\nsteps: [{sysext: 3}]\n", "steps[0].sysext", "non-empty"),
        ("description: d\nsteps: [{remove: /}]\n", "steps[0].remove", "refusing"),
        ("description: d\nsteps: [{mkdir: etc/x}]\n", "steps[0].mkdir", "absolute"),
        ("description: d\nsteps: [{symlink: /etc/a}]\n", "steps[0].to", "needs `to:`"),
        ("description: d\nsteps: [{merge: null, timeout: 0}]\n", "steps[0].timeout", "positive"),
        ("description: d\nsteps: [{merge: null, timeout: true}]\n", "steps[0].timeout",
         "positive"),
        ("description: d\nsteps: [{merge: null, name: ''}]\n", "steps[0].name", "non-empty"),
        ("description: d\nsteps: [{merge: null, when: {}}]\n", "steps[0].when",
         "at least one condition"),
        ("description: d\nsteps: [{merge: null, when: {systemd: '>=25x'}}]\n",
         "steps[0].when.systemd", "constraint"),
        ("description: d\nsteps: [{merge: null, when: {colour: red}}]\n",
         "steps[0].when.colour", "unknown key"),
        ("description: d\nsteps: [{merge: null, dir: /x}]\n", "steps[0].dir", "unknown key"),
        ("description: d\nsteps: [{remove: /x, expect: {merged: []}}]\n", "steps[0].expect",
         "separate"),
        ("description: d\nsteps: [{expect: {}}]\n", "steps[0].expect", "non-empty"),
        ("description: d\nsteps: [{expect: {merged: a}}]\n", "steps[0].expect.merged", "list"),
        ("description: d\nsteps: [{expect: {stdout_contains: x}}]\n",
         "steps[0].expect.stdout_contains", "command"),
        ("description: d\nsteps: [{expect: {output_matches: x}}]\n",
         "steps[0].expect.output_matches", "command"),
        ("description: d\nsteps: [{expect: {bogus: 1}}]\n", "steps[0].expect.bogus",
         "unknown expectation"),
        ("description: d\nsteps: [{expect: {files_present: [usr/bin]}}]\n",
         "steps[0].expect.files_present[0]", "absolute"),
        ("description: d\nsteps: [{expect: {unit_state: {a.service: up}}}]\n",
         "steps[0].expect.unit_state.a.service", "unit state"),
        ("description: d\nsteps: [{expect: {merged_into: {opt: [a]}}}]\n",
         "steps[0].expect.merged_into.opt", "absolute"),
        ("description: d\nsteps: [{run: x, expect: {output_matches: '('}}]\n",
         "steps[0].expect.output_matches[0]", "regular expression"),
        ("description: d\nsteps: [{run: x, expect: {exit: true}}]\n", "steps[0].expect.exit",
         "exit code"),
        ("description: d\nsteps: [{run: x, expect: {stdout_contains: []}}]\n",
         "steps[0].expect.stdout_contains", "empty"),
        ("description: d\nsteps: [{run: x, expect: {exit: {by_systemd: {'>=x': 1}}}}]\n",
         "steps[0].expect.exit.by_systemd.>=x", "constraint"),
        ("description: d\nsteps: [{run: x, expect: {exit: {by_systemd: {'>=256': 'one'}}}}]\n",
         "steps[0].expect.exit.by_systemd.>=256", "exit code"),
        ("description: d\nsteps: [{run: x, expect: {exit: {by_systemd: {default: 1}}}}]\n",
         "steps[0].expect.exit.by_systemd", "at least one version"),
        ("description: d\nsteps: [{run: x, expect: {exit: {by_systemd: {'>=1': 1}, x: 2}}}]\n",
         "steps[0].expect.exit", "cannot be combined"),
        ("description: d\napplies_to: {reason: why}\nsteps: [merge]\n", "applies_to",
         "at least one condition"),
        ("description: d\napplies_to: [flatcar]\nsteps: [merge]\n", "applies_to", "mapping"),
        ("description: d\napplies_to: {personas: []}\nsteps: [merge]\n",
         "applies_to.personas", "empty"),
        ("description: d\ntags: [skip]\nsteps: [merge]\n", "tags[0]", "reserved"),
        ("description: d\ntags: [a-b]\nsteps: [merge]\n", "tags[0]", "invalid tag"),
        ("description: d\ntags: merge\nsteps: [merge]\n", "tags", "list"),
        ("description: d\nextensions: [hello]\nsteps: [merge]\n", "extensions", "mapping"),
        ("description: d\nsteps: [{install: x}]\n", "steps[0].install", "not defined"),
        ("description: d\nsteps: [{mkdir: /x, mode: 0755}]\n", "steps[0].mode", "quotes"),
        ("description: d\nsteps: [{write: /etc/x}]\n", "steps[0].content", "needs `content:`"),
        ("description: d\nsteps: [{write: /etc/x, content: a, owner: 'a b'}]\n",
         "steps[0].owner", "not an owner"),
        ("description: d\nsteps: [{mount: /usr/share}]\n", "steps[0]", "exactly one"),
        ("description: d\nsteps: [{mount: /x, fstype: tmpfs, source: /y}]\n", "steps[0]",
         "exactly one"),
        ("description: d\nsteps: [{mount: /x, fstype: tmpfs, options: 'ro, nosuid'}]\n",
         "steps[0].options", "without spaces"),
        ("description: d\nsteps: [{umount: /x, lazy: 1}]\n", "steps[0].lazy", "true or false"),
        ("description: d\nsteps: [{move_aside: /usr}]\n", "steps[0].move_aside", "break"),
        ("description: d\nsteps: [{remember: {1pid: x}}]\n", "steps[0].remember.1pid",
         "not a name"),
        ("description: d\nsteps: [{expect: {unchanged: [pid]}}]\n",
         "steps[0].expect.unchanged", "no `remember` step before"),
        ("description: d\nsteps: [{expect: {mounted: {/usr: {fs: tmpfs}}}}]\n",
         "steps[0].expect.mounted./usr.fs", "unknown mount check"),
    ],
)
def test_single_mistakes(tmp_path: Path, body: str, key: str, fragment: str) -> None:
    errors = errors_of(write(tmp_path, body))
    assert key in keys_of(errors), [e.render() for e in errors]
    err = next(e for e in errors if e.key == key)
    assert fragment in err.render(), err.render()


def test_install_checks_dir_and_as(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path, dd(HELLO, """\
        description: d
        steps:
          - {install: hello, dir: relative, as: a/b.raw}
    """)))
    assert {"steps[0].dir", "steps[0].as"} <= set(keys_of(errors))


def test_extension_spec_errors_are_adopted_with_lines(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        description: d
        extensions:
          hello:
            format: squashfss
        steps:
          - install: hello
    """)
    errors = errors_of(path)
    # The spec error is reported, and the install step does not cascade into a second one.
    assert keys_of(errors) == ["extensions.hello.format"]
    assert errors[0].file == f"{path}:4"


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "description: d\nsteps:\n  - merge\n   - bad: [\n")
    errors = errors_of(path)
    assert len(errors) == 1
    assert errors[0].file == f"{path}:4"
    assert "YAML syntax error" in errors[0].message


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        description: d
        steps:
          - merge:
            expect: {exit: 1}
            expect: {exit: 0}
    """)
    errors = errors_of(path)
    assert keys_of(errors) == ["steps[0].expect"]
    assert "duplicate" in errors[0].message
    assert errors[0].file == f"{path}:5"


@pytest.mark.parametrize(("text", "fragment"), [("", "empty"), ("- merge\n", "mapping")])
def test_wrong_document_shape(tmp_path: Path, text: str, fragment: str) -> None:
    errors = errors_of(write(tmp_path, text))
    assert fragment in errors[0].message


# ------------------------------------------------------------------------- many files


def test_load_scenarios_recursive_sorted(tmp_path: Path) -> None:
    write(tmp_path, "description: b\nsteps: [merge]\n", "b.yaml")
    write(tmp_path, "description: a\nsteps: [merge]\n", "sub/a.yaml")
    write(tmp_path, "description: z\nsteps: [merge]\n", "a0.yaml")
    write(tmp_path, "not: [valid\n", ".hidden/x.yaml")
    names = [s.name for s in load_scenarios(tmp_path)]
    assert names == ["a0", "b", "a"]  # sorted by path: a0.yaml, b.yaml, sub/a.yaml


def test_load_scenarios_reports_every_file(tmp_path: Path) -> None:
    write(tmp_path, "description: ok\nsteps: [merge]\n", "ok.yaml")
    write(tmp_path, "steps: [merge]\n", "one.yaml")
    write(tmp_path, "description: d\nsteps: []\n", "two.yaml")
    write(tmp_path, "description: d\nsteps: [merge]\n", "dup/ok.yaml")
    write(tmp_path, "description: d\nsteps: [merge]\n", "old.yml")
    with pytest.raises(ConfigErrors) as info:
        load_scenarios(tmp_path)
    text = str(info.value)
    assert "one.yaml: description: missing" in text
    assert "two.yaml:2: steps" in text
    assert "already used" in text
    assert "old.yml" in text and ".yaml" in text


def test_load_scenarios_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_scenarios(tmp_path / "nope")


def test_load_scenarios_single_file(tmp_path: Path) -> None:
    path = write(tmp_path, "description: d\nsteps: [merge]\n", "one.yaml")
    assert [s.name for s in load_scenarios(path)] == ["one"]


# ------------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"


def test_documented_examples_are_valid(tmp_path: Path) -> None:
    """Every complete scenario shown in docs/scenarios.md loads without errors."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    complete = [b for b in blocks if b.startswith("description:")]
    assert len(complete) >= 5
    for i, block in enumerate(complete):
        load_scenario(write(tmp_path, block, f"example{i}.yaml"))


def test_env_and_confext_steps(tmp_path: Path) -> None:
    path = write(tmp_path, dd("description: env and confext steps\n", HELLO, """\
        steps:
          - merge:
            env: {SYSTEMD_SYSEXT_MUTABLE_MODE: ephemeral, SYSTEMD_LOG_LEVEL: debug}
          - sysext: "status --json=short"
            env: {SYSTEMD_SYSEXT_OVERLAYFS_MOUNT_OPTIONS: "noatime,ro 1"}
          - confext_merge
          - confext_refresh: {args: --force}
            env: {N: 3}
          - confext: "unmerge"
    """))
    steps = load_scenario(path).steps
    assert steps[0].command == ("SYSTEMD_SYSEXT_MUTABLE_MODE=ephemeral SYSTEMD_LOG_LEVEL=debug "
                                "systemd-sysext merge")
    assert steps[0].summary == ("merge (SYSTEMD_SYSEXT_MUTABLE_MODE=ephemeral "
                                "SYSTEMD_LOG_LEVEL=debug)")
    assert steps[1].command == ("SYSTEMD_SYSEXT_OVERLAYFS_MOUNT_OPTIONS='noatime,ro 1' "
                                "systemd-sysext status --json=short")
    assert steps[2].command == "systemd-confext merge"
    assert steps[2].action == "confext_merge"
    assert steps[3].command == "N=3 systemd-confext refresh --force"
    assert steps[4].command == "systemd-confext unmerge"
    assert steps[4].summary == "confext unmerge"


def test_env_errors_name_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, dd("description: bad env\n", HELLO, """\
        steps:
          - merge:
            env: [SYSTEMD_LOG_LEVEL=debug]
          - unmerge:
            env: {1BAD: x}
          - refresh:
            env: {SYSTEMD_LOG_LEVEL: [debug]}
          - run: "true"
            env: {A: b}
          - confext: ""
    """))
    errors = errors_of(path)
    assert keys_of(errors) == ["steps[0].env", "steps[1].env.1BAD",
                               "steps[2].env.SYSTEMD_LOG_LEVEL", "steps[3].env",
                               "steps[4].confext"]
    assert "mapping" in str(errors[0]) and "letters, digits" in str(errors[1])


def test_source_cites_upstream_cases(tmp_path: Path) -> None:
    path = write(tmp_path, dd("description: cites upstream\n", """\
        source:
          - {upstream: TEST-50-DISSECT.sysext.sh, case: "Check if vpick works
              for directory extensions"}
          - {upstream: TEST-72-SYSUPDATE.sh, case: Refuse the cleanup verb with --cleanup=no}
        steps: [merge]
    """))
    source = load_scenario(path).source
    assert [(c.file, c.case) for c in source] == [
        ("TEST-50-DISSECT.sysext.sh", "Check if vpick works for directory extensions"),
        ("TEST-72-SYSUPDATE.sh", "Refuse the cleanup verb with --cleanup=no")]
    single = write(tmp_path, dd("description: one\n", """\
        source: {upstream: TEST-50-DISSECT.DDI.sh, case: Dissect the signed sysext DDI}
        steps: [merge]
    """), name="one.yaml")
    assert load_scenario(single).source[0].file == "TEST-50-DISSECT.DDI.sh"
    loose = write(tmp_path, dd("description: loose\n", """\
        source: {upstream: TEST-50-DISSECT.DDI.sh, case: a DDI}
        steps: [merge]
    """), name="loose.yaml")
    assert keys_of(errors_of(loose)) == ["source.case"]  # every file has an inventory now


def test_source_errors_name_key_and_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, dd("description: bad source\n", """\
        source:
          - {upstream: TEST-99-NOPE.sh, case: x}
          - {upstream: TEST-72-SYSUPDATE.sh, case: ""}
          - {upstream: TEST-72-SYSUPDATE.sh, case: List the target versions correctly, line: 3}
          - TEST-72-SYSUPDATE.sh
          - {upstream: TEST-50-DISSECT.sysext.sh, case: Check if vpick works for dir extensions}
        steps: [merge]
    """))
    errors = errors_of(path)
    assert keys_of(errors) == ["source[0].upstream", "source[1].case", "source[2].line",
                               "source[3]", "source[4].case"]
    assert "TEST-50-DISSECT.sysext.sh" in str(errors[0])
    assert "Check if vpick works for directory extensions" in str(errors[4])  # the close one
