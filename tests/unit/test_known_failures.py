"""known-failures.yaml: loading, every class of input mistake, matching, expiry, outcomes."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from harness.errors import ConfigError, ConfigErrors
from harness.known_failures import (
    KnownFailure,
    KnownFailures,
    can_go_warnings,
    judge_failure,
    judge_pass,
    load_known_failures,
)
from harness.paths import project_root

TRACKER = "https://github.com/systemd/systemd/issues/12345"
GOOD = f"""\
# the project's list
- scenario: merge-erofs
  target: "refos-252-*"
  reason: "252's kernel lacks erofs"
  tracker: {TRACKER}
  until: 2027-01-31

- scenario: "vpick-*, mutable-yes"
  reason: >
    flaky under TCG,
    see the tracker
  tracker: http://bugs.example.org/7
  until: "2026-11-30"
"""


def write(tmp_path: Path, text: str, name: str = "known-failures.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        load_known_failures(path, required=True)
    assert info.value.exit_code == 2
    return info.value.errors


def entry(scenario: str = "merge-erofs", target: str = "*", until: date | None = None,
          index: int = 0, line: int | None = 2) -> KnownFailure:
    return KnownFailure(scenario=scenario, target=target, reason="252's kernel lacks erofs",
                        tracker=TRACKER, until=until, index=index, line=line)


def known(*entries: KnownFailure) -> KnownFailures:
    return KnownFailures(path=Path("known-failures.yaml"), entries=entries)


# ------------------------------------------------------------------------ valid input


def test_good_file_builds_typed_entries(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    kf = load_known_failures(path, required=True)
    assert kf.path == path
    assert len(kf) == 2
    first, second = kf.entries
    assert first == KnownFailure(scenario="merge-erofs", target="refos-252-*",
                                 reason="252's kernel lacks erofs", tracker=TRACKER,
                                 until=date(2027, 1, 31), index=0, line=2)
    assert second.scenario == "vpick-*,mutable-yes"  # spaces around commas dropped
    assert second.target == "*"  # the default
    assert second.until == date(2026, 11, 30)  # the quoted form
    assert (second.index, second.line) == (1, 8)
    assert second.describe() == (
        "flaky under TCG, see the tracker (http://bugs.example.org/7, until 2026-11-30)"
    )
    assert first.describe() == f"252's kernel lacks erofs ({TRACKER}, until 2027-01-31)"
    assert entry().describe() == f"252's kernel lacks erofs ({TRACKER})"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[]\n", "---\n"])
def test_empty_file_has_no_entries(tmp_path: Path, text: str) -> None:
    assert load_known_failures(write(tmp_path, text), required=True).entries == ()


def test_missing_file_is_empty_unless_required(tmp_path: Path) -> None:
    path = tmp_path / "known-failures.yaml"
    kf = load_known_failures(path, required=False)
    assert (kf.path, kf.entries) == (path, ())
    with pytest.raises(ConfigError) as info:
        load_known_failures(path, required=True)
    assert info.value.exit_code == 2
    assert str(path) in str(info.value) and "does not exist" in str(info.value)


def test_a_directory_is_refused_even_when_not_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_known_failures(tmp_path, required=False)
    assert "cannot read" in str(info.value)


def test_the_projects_own_list_loads() -> None:
    path = project_root() / "known-failures.yaml"
    assert path.is_file()
    kf = load_known_failures(path, required=True)
    assert isinstance(kf, KnownFailures)


# ---------------------------------------------------------------------- invalid input

ENTRY = f"- scenario: merge-erofs\n  reason: r\n  tracker: {TRACKER}\n"


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment", "value"),
    [
        # unknown keys, with and without a close match
        (ENTRY + "  trackr: x\n", 4, "[0].trackr", "did you mean `tracker`?", "trackr"),
        (ENTRY + "  colour: red\n", 4, "[0].colour", "unknown key", "colour"),
        # missing required keys: reported at the entry's line
        (f"- reason: r\n  tracker: {TRACKER}\n", 1, "[0].scenario", "missing required key",
         None),
        (f"- scenario: s\n  tracker: {TRACKER}\n", 1, "[0].reason", "missing required key",
         None),
        ("- scenario: s\n  reason: r\n", 1, "[0].tracker", "missing required key", None),
        # tracker
        ("- scenario: s\n  reason: r\n  tracker: github.com/systemd/systemd/issues/1\n", 3,
         "[0].tracker", "not an http(s) URL", "github.com/systemd/systemd/issues/1"),
        ("- scenario: s\n  reason: r\n  tracker: ftp://example.org/1\n", 3, "[0].tracker",
         "not an http(s) URL", "ftp://example.org/1"),
        ("- scenario: s\n  reason: r\n  tracker: https://\n", 3, "[0].tracker",
         "not an http(s) URL", "https://"),
        ("- scenario: s\n  reason: r\n  tracker: https://exa mple.org/1\n", 3, "[0].tracker",
         "not an http(s) URL", "https://exa mple.org/1"),
        ("- scenario: s\n  reason: r\n  tracker: 12345\n", 3, "[0].tracker",
         "must be a URL, not an integer", 12345),
        # until
        (ENTRY + "  until: 31.01.2027\n", 4, "[0].until", "must be a date, not a string",
         "31.01.2027"),
        (ENTRY + "  until: 2027-02-30\n", 4, "[0].until", "not a valid date", "2027-02-30"),
        (ENTRY + '  until: "2027-02-30"\n', 4, "[0].until", "not a valid date", "2027-02-30"),
        (ENTRY + "  until: 2027-01-31 10:00:00\n", 4, "[0].until", "without a time of day",
         "2027-01-31T10:00:00"),
        (ENTRY + "  until: 20270131\n", 4, "[0].until", "must be a date, not an integer",
         20270131),
        (ENTRY + "  until:\n", 4, "[0].until", "omit `until`", None),
        # scenario and target
        (f"- scenario: [a, b]\n  reason: r\n  tracker: {TRACKER}\n", 1, "[0].scenario",
         "must be a string, not a list", ["a", "b"]),
        (f"- scenario: ''\n  reason: r\n  tracker: {TRACKER}\n", 1, "[0].scenario",
         "must not be empty", ""),
        (f"- scenario: a,,b\n  reason: r\n  tracker: {TRACKER}\n", 1, "[0].scenario",
         "empty glob", "a,,b"),
        (f"- scenario: scenarios/merge/merge-erofs.yaml\n  reason: r\n  tracker: {TRACKER}\n",
         1, "[0].scenario", "not paths", "scenarios/merge/merge-erofs.yaml"),
        (f"- scenario: merge-erofs.yaml\n  reason: r\n  tracker: {TRACKER}\n", 1,
         "[0].scenario", "not paths", "merge-erofs.yaml"),
        (ENTRY + "  target: targets/flatcar-stable.yaml\n", 4, "[0].target", "not paths",
         "targets/flatcar-stable.yaml"),
        (ENTRY + "  target: 252\n", 4, "[0].target", "must be a string, not an integer", 252),
        # reason
        (f"- scenario: s\n  reason: '  '\n  tracker: {TRACKER}\n", 2, "[0].reason",
         "must not be empty", "  "),
        (f"- scenario: s\n  reason: [a]\n  tracker: {TRACKER}\n", 2, "[0].reason",
         "must be a string, not a list", ["a"]),
        # entries and the file's shape
        ("- merge-erofs\n", 1, "[0]", "an entry must be a mapping, not a string",
         "merge-erofs"),
        (ENTRY + "- null\n", 4, "[1]", "an entry must be a mapping, not null", None),
        ("known_failures:\n  - scenario: s\n", None, None, "write the entries at top level",
         None),
        ("merge-erofs\n", None, None, "must be a list of entries, not a string", None),
        (ENTRY + "  reason: again\n", 4, "[0].reason", "duplicate key", None),
    ],
)
def test_bad_input_names_file_line_entry_key_and_value(
    tmp_path: Path, text: str, line: int | None, key: str | None, fragment: str,
    value: object,
) -> None:
    path = write(tmp_path, text)
    errors = errors_of(path)
    assert len(errors) == 1, [e.render() for e in errors]
    err = errors[0]
    assert err.file == (f"{path}:{line}" if line else str(path))
    assert err.key == key
    assert fragment in err.message + (err.allowed or "")
    assert err.value == value
    assert err.allowed  # always says what is accepted
    assert err.render().startswith(f"{err.file}: {key}: " if key else f"{err.file}: ")


def test_every_problem_of_the_file_is_reported_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
        - scenario: ok
          reason: fine
          tracker: {TRACKER}
        - scenario: merge-erofs
          reasn: typo
          tracker: github.com/x
        - scenario: s
          reason: r
          tracker: {TRACKER}
          until: tomorrow
    """)
    errors = errors_of(path)
    assert [(e.file, e.key) for e in errors] == [
        (f"{path}:4", "[1].reason"),
        (f"{path}:5", "[1].reasn"),
        (f"{path}:6", "[1].tracker"),
        (f"{path}:10", "[2].until"),
    ]
    assert "allowed: scenario, target, reason, tracker, until" in errors[1].render()


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, ENTRY + "- scenario: [unclosed\n")
    (err,) = errors_of(path)
    assert err.file == f"{path}:5"
    assert err.message.startswith("YAML syntax error")


# ---------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("scenario", "target", "run", "hit"),
    [
        ("merge-erofs", "*", ("merge-erofs", "refos-257-fcos"), True),
        ("merge-erofs", "*", ("merge-erofs-2", "refos-257-fcos"), False),
        ("merge-*", "refos-252-*", ("merge-erofs", "refos-252-flatcar"), True),
        ("merge-*", "refos-252-*", ("merge-erofs", "refos-257-flatcar"), False),
        ("merge-?rofs", "refos-25[23]-*", ("merge-erofs", "refos-253-fcos"), True),
        ("vpick-*,mutable-yes", "*", ("mutable-yes", "flatcar-stable"), True),
        ("vpick-*,mutable-yes", "*", ("mutable-no", "flatcar-stable"), False),
        ("s", "refos-252-fcos,refos-253-fcos", ("s", "refos-253-fcos"), True),
        ("Merge-erofs", "*", ("merge-erofs", "t"), False),  # case-sensitive, as --target
    ],
)
def test_globs_match_scenario_and_target(
    scenario: str, target: str, run: tuple[str, str], hit: bool
) -> None:
    assert entry(scenario, target).matches(*run) is hit


def test_exact_only_without_globs_or_commas() -> None:
    assert entry("merge-erofs", "refos-252-flatcar").exact
    assert not entry("merge-erofs").exact  # the default target "*"
    assert not entry("merge-*", "refos-252-flatcar").exact
    assert not entry("merge-erofs", "refos-252-fcos,refos-252-flatcar").exact


def test_until_day_still_applies_and_the_next_day_it_is_expired() -> None:
    e = entry(until=date(2026, 11, 30))
    assert not e.expired(date(2026, 11, 29))
    assert not e.expired(date(2026, 11, 30))
    assert e.expired(date(2026, 12, 1))
    assert not entry(until=None).expired(date(2999, 1, 1))


def test_lookup_takes_the_first_active_entry_and_lists_expired_ones() -> None:
    old = entry(until=date(2026, 11, 30), index=0)
    other = entry(scenario="vpick-*", index=1)
    broad = entry(scenario="merge-*", index=2)
    later = entry(index=3)
    kf = known(old, other, broad, later)

    v = kf.lookup("merge-erofs", "refos-252-flatcar", date(2026, 11, 30))
    assert (v.active, v.expired) == (old, ())

    v = kf.lookup("merge-erofs", "refos-252-flatcar", date(2026, 12, 1))
    assert (v.active, v.expired) == (broad, (old,))

    v = known(old).lookup("merge-erofs", "t", date(2026, 12, 1))
    assert (v.active, v.expired) == (None, (old,))

    v = kf.lookup("unrelated", "t", date(2026, 12, 1))
    assert (v.active, v.expired) == (None, ())


# ---------------------------------------------------------------------------- outcomes

TODAY = date(2026, 6, 1)


def test_judge_failure_known() -> None:
    kf = known(entry(until=date(2027, 1, 31), line=7))
    outcome, note = judge_failure(kf, "merge-erofs", "refos-252-flatcar", TODAY)
    assert outcome == "known"
    assert note == ("known failure (known-failures.yaml:7 entry [0]): 252's kernel lacks "
                    f"erofs ({TRACKER}, until 2027-01-31)")


def test_judge_failure_after_expiry_counts_again_and_names_the_entry() -> None:
    kf = known(entry(until=date(2026, 5, 31), index=2, line=12))
    judgement = judge_failure(kf, "merge-erofs", "refos-252-flatcar", TODAY)
    assert judgement.outcome == "fail"
    assert judgement.note == ("known-failures.yaml:12 entry [2] expired after 2026-05-31, "
                              "this failure counts again: 252's kernel lacks erofs "
                              f"({TRACKER})")


def test_judge_failure_without_entries_is_a_plain_failure() -> None:
    assert judge_failure(known(entry()), "other", "t", TODAY) == ("fail", None)
    assert judge_failure(known(), "merge-erofs", "t", TODAY) == ("fail", None)


def test_judge_pass_warns_that_the_entry_can_go() -> None:
    kf = known(entry(target="refos-252-flatcar", index=3, line=None))
    assert judge_pass(kf, "merge-erofs", "refos-252-flatcar", TODAY) == (
        "scenario merge-erofs on target refos-252-flatcar passed, but known-failures.yaml "
        f"entry [3] ({TRACKER}) says it fails: the entry can go"
    )
    assert judge_pass(kf, "merge-erofs", "refos-257-flatcar", TODAY) is None


def test_judge_pass_of_a_glob_entry_may_only_narrow_it() -> None:
    warning = judge_pass(known(entry(target="refos-252-*")), "merge-erofs",
                         "refos-252-flatcar", TODAY)
    assert warning is not None
    assert warning.endswith("the entry can go, or be narrowed if other runs it matches "
                            "still fail")


def test_judge_pass_names_expired_entries_too() -> None:
    kf = known(entry(until=date(2026, 5, 31), line=2), entry(index=1, line=8))
    warning = judge_pass(kf, "merge-erofs", "t", TODAY)
    assert warning is not None
    first, second = warning.splitlines()
    assert "known-failures.yaml:2 entry [0]" in first
    assert "expired after 2026-05-31 and said it fails" in first
    assert "known-failures.yaml:8 entry [1]" in second and "says it fails" in second


def test_can_go_warnings_only_for_entries_whose_runs_all_passed() -> None:
    kf = known(entry(target="refos-252-*", index=0, line=2),
               entry(scenario="vpick-*", index=1, line=8),
               entry(scenario="never-ran", index=2, line=14))
    runs = [("merge-erofs", "refos-252-flatcar", True),
            ("merge-erofs", "refos-252-fcos", True),
            ("vpick-version", "refos-252-fcos", True),
            ("vpick-version", "refos-257-fcos", False),
            ("merge-erofs", "refos-257-fcos", False)]
    assert can_go_warnings(kf, runs) == (
        f"known-failures.yaml:2 entry [0] ({TRACKER}): every run it matches passed "
        "(2 runs): the entry can go",
    )
    assert can_go_warnings(kf, iter(runs[:1]))[0].endswith("passed (1 run): the entry can go")
