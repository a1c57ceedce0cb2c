"""The results matrix: scenario x target -> pass, fail or n/a (with the reason).

Nightly CI users read this first, so it is printed at the end of a run and written as
Markdown and JSON into the run's artifact directory. Each run cell also keeps its duration,
and the totals per target say where a long run spent its time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import first_line
from harness.report_html import matrix_html

SYMBOL = {"pass": "pass", "fail": "FAIL", "n/a": "n/a", "error": "ERROR", "skip": "skip",
          "flaky": "FLAKY", "known": "known"}


@dataclass
class Matrix:
    targets: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)

    def add(self, scenario: str, target: str, outcome: str, detail: str = "",
            seconds: float | None = None, *, attempts: list[dict] | None = None,
            note: str | None = None) -> None:
        """One cell. `attempts`: each attempt of a rerun run (`Attempt.as_json`), whose
        last one's health-check findings become the cell's `findings`; `note`: what the
        run said about a known-failures entry (expired, or no longer needed)."""
        if target not in self.targets:
            self.targets.append(target)
        cell: dict[str, object] = {"outcome": outcome, "detail": detail}
        if seconds is not None:
            cell["seconds"] = round(seconds, 1)
        if attempts:
            cell["attempts"] = attempts
            findings = [f for a in attempts for f in a.get("findings", [])]
            if findings:
                cell["findings"] = findings
        if note:
            cell["note"] = note
        self.cells.setdefault(scenario, {})[target] = cell

    def seconds_per_target(self) -> dict[str, float]:
        """Summed durations of the scenario runs on each target (n/a cells cost nothing)."""
        out = {t: 0.0 for t in self.targets}
        for row in self.cells.values():
            for target, cell in row.items():
                seconds = cell.get("seconds")
                if isinstance(seconds, int | float):
                    out[target] = out.get(target, 0.0) + seconds
        return {t: round(s, 1) for t, s in out.items()}

    def _time_line(self) -> str:
        per_target = self.seconds_per_target()
        if not any(per_target.values()):
            return ""
        return "time per target: " + ", ".join(f"{t} {s:.0f} s" for t, s in per_target.items())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.cells.values():
            for cell in row.values():
                outcome = str(cell["outcome"])
                out[outcome] = out.get(outcome, 0) + 1
        return out

    def rows(self) -> list[tuple[str, list[str]]]:
        return [(name, [SYMBOL.get(str(self.cells[name].get(t, {}).get("outcome", "")), "")
                         for t in self.targets])
                for name in sorted(self.cells)]

    def text(self) -> str:
        width = max([len("scenario")] + [len(n) for n in self.cells])
        cols = [max(len(t), 5) for t in self.targets]
        lines = ["scenario".ljust(width) + "  " + "  ".join(
            t.ljust(c) for t, c in zip(self.targets, cols, strict=True))]
        for name, marks in self.rows():
            lines.append(name.ljust(width) + "  " + "  ".join(
                m.ljust(c) for m, c in zip(marks, cols, strict=True)))
        totals = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items()))
        timing = self._time_line()
        return "\n".join(lines) + f"\n({totals})" + (f"\n{timing}" if timing else "")

    def markdown(self) -> str:
        head = "| scenario | " + " | ".join(self.targets) + " |"
        sep = "|---|" + "---|" * len(self.targets)
        body = [f"| {name} | " + " | ".join(marks) + " |" for name, marks in self.rows()]
        notes = []
        for name in sorted(self.cells):
            for target, cell in self.cells[name].items():
                if cell["outcome"] != "pass" and cell["detail"]:
                    first = first_line(cell["detail"])
                    notes.append(f"- **{name}** on `{target}` ({cell['outcome']}): {first}")
                failed = [a for a in cell.get("attempts", []) or []  # type: ignore[attr-defined]
                          if a.get("outcome") == "fail"]
                if cell["outcome"] == "flaky" and failed:
                    notes.append(f"- **{name}** on `{target}` (flaky): failed first: "
                                 f"{first_line(failed[0].get('detail'))} "
                                 f"({failed[0].get('artifacts')})")
                if cell.get("note"):
                    notes.append(f"- **{name}** on `{target}`: {cell['note']}")
        text = "\n".join([head, sep, *body])
        timing = self._time_line()
        if timing:
            text += "\n\n" + timing[0].upper() + timing[1:]
        if notes:
            text += "\n\n" + "\n".join(notes)
        return text + "\n"

    def tap(self) -> str:
        """The matrix as TAP version 13, one test point per scenario x target: a pass is
        `ok`, n/a and skipped runs are `ok ... # SKIP reason`, anything else is `not ok` with
        the first lines of its failure in a YAML block, as TAP consumers (Jenkins, prove,
        tap-junit) read it."""
        points: list[str] = []
        for name in sorted(self.cells):
            for target in self.targets:
                cell = self.cells[name].get(target)
                if cell is None:
                    continue
                outcome, detail = str(cell["outcome"]), str(cell.get("detail", "")).strip()
                label = f"{name} on {target}"
                if outcome == "pass":
                    points.append(f"ok {len(points) + 1} - {label}")
                elif outcome == "known":  # an expected failure: TAP's TODO
                    reason = " ".join(detail.splitlines()[:1]) or "known failure"
                    points.append(f"not ok {len(points) + 1} - {label} # TODO {reason}")
                elif outcome == "flaky":
                    points.append(f"ok {len(points) + 1} - {label} (flaky: failed, then "
                                  f"passed on a rerun)")
                elif outcome in ("n/a", "skip"):
                    reason = " ".join(detail.split()) or outcome
                    points.append(f"ok {len(points) + 1} - {label} # SKIP {reason}")
                else:
                    lines = [f"not ok {len(points) + 1} - {label}", "  ---",
                             f"  outcome: {outcome}"]
                    if "seconds" in cell:
                        lines.append(f"  seconds: {cell['seconds']}")
                    if detail:
                        lines.append("  message: |")
                        lines += [f"    {line}" for line in detail.splitlines()[:40]]
                    lines.append("  ...")
                    points.append("\n".join(lines))
        return "\n".join(["TAP version 13", f"1..{len(points)}", *points]) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md = directory / "matrix.md"
        md.write_text("# Results matrix\n\n" + self.markdown())
        (directory / "matrix.html").write_text(matrix_html(self, directory), encoding="utf-8")
        js = directory / "matrix.json"
        js.write_text(json.dumps({"targets": self.targets, "results": self.cells,
                                  "counts": self.counts(),
                                  "seconds_per_target": self.seconds_per_target()},
                                 indent=2) + "\n")
        return md, js
