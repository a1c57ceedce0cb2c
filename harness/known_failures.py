"""`known-failures.yaml`: failures the maintainers know about, so nightly CI stays readable.

The file is a YAML list at top level, one mapping per entry (an empty file, or one with
only comments, has no entries)::

    - scenario: merge-erofs            # required: fnmatch glob(s) on the scenario name
      target: "refos-252-*"            # optional, default "*": glob(s) on the target name
      reason: "252's kernel lacks erofs"   # required, non-empty
      tracker: https://github.com/systemd/systemd/issues/12345   # required, http(s) URL
      until: 2027-01-31                # optional ISO date, quoted or not

- `scenario` and `target` take one glob or several separated by commas
  (`"refos-252-*, refos-253-*"`), matched case-sensitively as `--target` does; a scenario
  name is a file stem (`merge-erofs`), never a path.
- `until` is the last day the entry applies: on that day it still does, from the next
  day on the entry is *expired* and a matching failure is a plain failure again, with a
  note naming the entry.
- Entries are numbered from 0 in file order, as the scenario loader numbers steps; a
  problem is reported at `known-failures.yaml:LINE` with the key path (`[2].tracker`),
  the value found and what is accepted, every problem of the file in one ConfigErrors.

A failed run that an entry matches (the first matching entry that has not expired) is
`known`; a run that passes although an entry matches yields a warning that the entry can
go. Everything here is pure: the caller passes `today` (once per session, so a run that
crosses midnight judges every item alike) and shows the texts.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

import yaml

from harness.errors import ConfigError, ConfigErrors

FILE_NAME = "known-failures.yaml"
KEYS: tuple[str, ...] = ("scenario", "target", "reason", "tracker", "until")
REQUIRED_KEYS: tuple[str, ...] = ("scenario", "reason", "tracker")
ENTRY_HELP = "a list of mappings with scenario, target, reason, tracker, until"
_GLOB_CHARS = re.compile(r"[*?\[]")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# ------------------------------------------------------------------------------ model


def _globs(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(","))


@dataclass(frozen=True)
class KnownFailure:
    """One entry of the file; `index` counts from 0, `line` is its line in the file."""

    scenario: str
    target: str
    reason: str
    tracker: str
    until: date | None
    index: int
    line: int | None

    def matches(self, scenario: str, target: str) -> bool:
        """Whether the run of `scenario` on `target` is one this entry is about."""
        return any(fnmatch.fnmatchcase(scenario, g) for g in _globs(self.scenario)) and any(
            fnmatch.fnmatchcase(target, g) for g in _globs(self.target)
        )

    def expired(self, today: date) -> bool:
        """True from the day after `until` on; the `until` day itself still applies."""
        return self.until is not None and today > self.until

    @property
    def exact(self) -> bool:
        """Names exactly one scenario and one target (no glob characters, no commas)."""
        return not any(_GLOB_CHARS.search(g) or "," in g for g in (self.scenario, self.target))

    def describe(self) -> str:
        """One line: `reason (tracker, until 2027-01-31)`."""
        until = f", until {self.until.isoformat()}" if self.until else ""
        return f"{' '.join(self.reason.split())} ({self.tracker}{until})"


@dataclass(frozen=True)
class Verdict:
    """What the file says about one run: the entry that applies, and expired ones."""

    active: KnownFailure | None  # the first matching entry that has not expired
    expired: tuple[KnownFailure, ...]  # every matching entry whose `until` has passed


@dataclass(frozen=True)
class KnownFailures:
    """The entries of one file, in file order (empty when the file is absent or empty)."""

    path: Path
    entries: tuple[KnownFailure, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    def matching(self, scenario: str, target: str) -> tuple[KnownFailure, ...]:
        """Every entry that matches the run, expired or not, in file order."""
        return tuple(e for e in self.entries if e.matches(scenario, target))

    def lookup(self, scenario: str, target: str, today: date) -> Verdict:
        matching = self.matching(scenario, target)
        active = next((e for e in matching if not e.expired(today)), None)
        return Verdict(active=active, expired=tuple(e for e in matching if e.expired(today)))

    def where(self, entry: KnownFailure) -> str:
        """`known-failures.yaml:12 entry [2]` (without `:12` when the line is unknown)."""
        line = f":{entry.line}" if entry.line else ""
        return f"{self.path}{line} entry [{entry.index}]"


class FailureJudgement(NamedTuple):
    """How a failed run shows: `known` (with the entry) or `fail` (with expiry notes)."""

    outcome: Literal["known", "fail"]
    note: str | None


# ----------------------------------------------------------------------- the outcomes


def judge_failure(
    known: KnownFailures, scenario: str, target: str, today: date
) -> FailureJudgement:
    """A failed run: `known` when an entry applies, else `fail`, noting expired entries.

    known:   ("known", "known failure (known-failures.yaml:7 entry [0]): REASON (URL)")
    expired: ("fail", "known-failures.yaml:7 entry [0] expired after 2026-11-30, this
             failure counts again: REASON (URL)"), one line per expired entry
    neither: ("fail", None)
    """
    verdict = known.lookup(scenario, target, today)
    if verdict.active is not None:
        entry = verdict.active
        return FailureJudgement("known", f"known failure ({known.where(entry)}): "
                                         f"{entry.describe()}")
    if verdict.expired:
        return FailureJudgement("fail", "\n".join(
            f"{known.where(e)} expired after {e.until}, this failure counts again: "
            f"{' '.join(e.reason.split())} ({e.tracker})"
            for e in verdict.expired
        ))
    return FailureJudgement("fail", None)


def judge_pass(known: KnownFailures, scenario: str, target: str, today: date) -> str | None:
    """A passed run that entries match: a warning that they can go (one line each).

    An entry whose globs name more runs than this one may still be needed by a run that
    fails, so its line says so; `can_go_warnings` judges entries over a whole session.
    """
    lines = []
    for entry in known.matching(scenario, target):
        says = (f"expired after {entry.until} and said it fails" if entry.expired(today)
                else "says it fails")
        tail = ("the entry can go" if entry.exact
                else "the entry can go, or be narrowed if other runs it matches still fail")
        lines.append(f"scenario {scenario} on target {target} passed, but "
                     f"{known.where(entry)} ({entry.tracker}) {says}: {tail}")
    return "\n".join(lines) or None


def can_go_warnings(
    known: KnownFailures, runs: Iterable[tuple[str, str, bool]]
) -> tuple[str, ...]:
    """End of a session: entries that matched runs, all of which passed.

    `runs` holds (scenario, target, passed) for every run that ran; a run that did not
    pass (failed, or any other outcome than a pass) keeps the entries that match it.
    Entries no run matched are not mentioned: this session says nothing about them.
    """
    seen = list(runs)
    out = []
    for entry in known.entries:
        matched = [passed for scenario, target, passed in seen if entry.matches(scenario, target)]
        if matched and all(matched):
            count = f"{len(matched)} run{'s' if len(matched) != 1 else ''}"
            out.append(f"{known.where(entry)} ({entry.tracker}): every run it matches "
                       f"passed ({count}): the entry can go")
    return tuple(out)


# ---------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps an impossible date (`2027-02-30`) as its text, so the check of
    `until` reports it with its entry instead of YAML failing with a bare ValueError."""


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
             dict: "mapping", date: "date", datetime: "date and time"}
    return names.get(type(value), type(value).__name__)


class _Errors:
    """Collects the problems of one file and places each at `file:line` when known."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}
        self.errors: list[ConfigError] = []

    def error(self, key: str | None, message: str, value: object = None,
              allowed: str | Iterable[str] | None = None, line: int | None = None) -> None:
        where = key
        while line is None and where:
            line = self.lines.get(where)
            where = where.rpartition(".")[0] if "." in where else None
        file = f"{self.path}:{line}" if line else str(self.path)
        self.errors.append(ConfigError(message, file=file, key=key, value=value,
                                       allowed=allowed))


def _index_lines(node: yaml.Node, errs: _Errors) -> None:
    """Lines of each entry (`[2]`) and its keys (`[2].tracker`); report duplicate keys."""
    if not isinstance(node, yaml.SequenceNode):
        return
    for i, item in enumerate(node.value):
        errs.lines[f"[{i}]"] = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode):
            continue
        seen: set[str] = set()
        for key_node, _ in item.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            key = f"[{i}].{name}"
            line = key_node.start_mark.line + 1
            if key in seen:
                errs.error(key, "duplicate key (YAML would silently keep only the last one)",
                           allowed="each key once per entry", line=line)
            seen.add(key)
            errs.lines.setdefault(key, line)


def _read(path: Path, errs: _Errors) -> object:
    """The file's data (None when it is empty); syntax errors are reported with their line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errs.error(None, f"cannot read the known-failures file: {exc}")
        return None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _index_lines(node, errs)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        errs.error(None, f"YAML syntax error: {problem}", line=mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        errs.error(None, f"YAML error: {exc}")
    finally:
        loader.dispose()
    return None


def _check_globs(errs: _Errors, key: str, value: object, what: str, example: str) -> str | None:
    allowed = f"a glob on the {what} name, or several separated by commas, e.g. {example}"
    if not isinstance(value, str) or not value.strip():
        errs.error(key, _not_text(value), value, allowed)
        return None
    globs = _globs(value)
    if not all(globs):
        errs.error(key, "empty glob (a comma too many?)", value, allowed)
        return None
    for glob in globs:
        if "/" in glob or glob.endswith((".yaml", ".yml")):
            errs.error(key, f"{what} names are names, not paths or file names", value,
                       f"the name alone, e.g. {example}")
            return None
    return ",".join(globs)


def _check_text(errs: _Errors, key: str, value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    errs.error(key, _not_text(value), value, "why the run fails, in a few words")
    return None


def _check_url(errs: _Errors, key: str, value: object) -> str | None:
    allowed = "an http(s) URL, e.g. https://github.com/systemd/systemd/issues/12345"
    if not isinstance(value, str):
        errs.error(key, f"must be a URL, not {_describe(value)}", value, allowed)
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or any(c.isspace() for c in url):
        errs.error(key, "not an http(s) URL", value, allowed)
        return None
    return url


def _check_date(errs: _Errors, key: str, value: object) -> date | None:
    allowed = "an ISO date YYYY-MM-DD, quoted or not, e.g. 2027-01-31"
    if isinstance(value, datetime):
        errs.error(key, "must be a date without a time of day", value.isoformat(), allowed)
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            errs.error(key, f"not a valid date: {exc}", value, allowed)
            return None
    if value is None:
        errs.error(key, "has no value (omit `until` for an entry without an end date)",
                   allowed=allowed)
        return None
    errs.error(key, f"must be a date, not {_describe(value)}", value, allowed)
    return None


def _not_text(value: object) -> str:
    if isinstance(value, str):
        return "must not be empty"
    return f"must be a string, not {_describe(value)}"


def _describe(value: object) -> str:
    """`an integer`, `a list`, `null`: for messages such as "must be a URL, not a list"."""
    if value is None:
        return "null"
    kind = _type_name(value)
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _entry(errs: _Errors, index: int, raw: object) -> KnownFailure | None:
    key = f"[{index}]"
    if not isinstance(raw, dict):
        errs.error(key, f"an entry must be a mapping, not {_describe(raw)}", raw,
                   f"a mapping with keys {', '.join(KEYS)}")
        return None
    before = len(errs.errors)
    for k in raw:
        if k not in KEYS:
            close = difflib.get_close_matches(str(k), KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            errs.error(f"{key}.{k}", f"unknown key{hint}", k, KEYS)
    for k in REQUIRED_KEYS:
        if k not in raw:
            errs.error(f"{key}.{k}", "missing required key", allowed={
                "scenario": "a glob on the scenario name, e.g. merge-erofs",
                "reason": "why the run fails, in a few words",
                "tracker": "an http(s) URL of the bug or issue",
            }[k])
    scenario = (_check_globs(errs, f"{key}.scenario", raw["scenario"], "scenario",
                             "merge-erofs") if "scenario" in raw else None)
    target = (_check_globs(errs, f"{key}.target", raw["target"], "target", "refos-252-*")
              if "target" in raw else "*")
    reason = _check_text(errs, f"{key}.reason", raw["reason"]) if "reason" in raw else None
    tracker = _check_url(errs, f"{key}.tracker", raw["tracker"]) if "tracker" in raw else None
    until = _check_date(errs, f"{key}.until", raw["until"]) if "until" in raw else None
    if len(errs.errors) > before or None in (scenario, target, reason, tracker):
        return None
    assert scenario is not None and target is not None
    assert reason is not None and tracker is not None
    return KnownFailure(scenario=scenario, target=target, reason=reason, tracker=tracker,
                        until=until, index=index, line=errs.lines.get(key))


def load_known_failures(path: Path, required: bool) -> KnownFailures:
    """Load and fully check a known-failures file; ConfigErrors lists every problem.

    A missing file is an error only when `required` (the user named the file); otherwise it
    means no entries, as an empty file does.
    """
    path = Path(path)
    if not path.exists():
        if required:
            raise ConfigError("known-failures file does not exist", file=path,
                              allowed=f"a YAML file with {ENTRY_HELP} (docs/known-failures.md)")
        return KnownFailures(path=path)
    errs = _Errors(path)
    data = _read(path, errs)
    entries: list[KnownFailure] = []
    if data is None:
        pass
    elif not isinstance(data, list):
        hint = (" (write the entries at top level, `- scenario: ...`)"
                if isinstance(data, dict) else "")
        errs.error(None, f"must be a list of entries, not {_describe(data)}{hint}",
                   allowed=ENTRY_HELP)
    else:
        for i, raw in enumerate(data):
            entry = _entry(errs, i, raw)
            if entry is not None:
                entries.append(entry)
    if errs.errors:
        raise ConfigErrors(sorted(errs.errors, key=_line_of))
    return KnownFailures(path=path, entries=tuple(entries))


def _line_of(err: ConfigError) -> int:
    """Errors in file order, as a reader scans the file (discovery order breaks ties)."""
    _, _, tail = (err.file or "").rpartition(":")
    return int(tail) if tail.isdigit() else 0
