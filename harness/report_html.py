"""The results matrix as one static HTML page (matrix.html in the run directory).

matrix.md says what failed; this page is for finding out why: every cell that ran links to
its artifact directory, and every cell that did not pass has a section below the table with
the whole failure message, its logs, earlier attempts and findings. It is a plain file with
inline CSS and no script, so it opens from file://, from a CI artifact browser or from a
web server alike, and links relative to itself, so the run directory can be moved or
archived. Links are only made to files that exist when the run directory is given.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from harness.errors import first_line

TITLE = "sysext-harness results"
NOT_RUN = ("n/a", "skip")  # outcomes without a machine run, so without artifacts
LOGS = ("steps.log", "console.log", "journal.txt")

CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: center; }
th:first-child, td:first-child { text-align: left; }
td a { color: inherit; }
.outcome-pass { background: #d7f5d7; color: #145a1e; }
.outcome-fail, .outcome-error { background: #f8d0d0; color: #8b0000; font-weight: bold; }
.outcome-flaky { background: #ffe2b8; color: #8a4b00; }
.outcome-known { background: #e6dcf2; color: #4b2a6e; }
.outcome-na, .outcome-skip { background: #eee; color: #666; }
section { margin-top: 1.5em; border-top: 1px solid #ccc; }
pre { background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }
"""


class MatrixView(Protocol):
    """What the page reads of `harness.report.Matrix`. A protocol rather than an import:
    report.py imports this module to write the page, and tests/unit/test_architecture.py
    forbids import cycles."""

    targets: list[str]
    cells: dict[str, dict[str, dict[str, object]]]

    def counts(self) -> dict[str, int]: ...

    def seconds_per_target(self) -> dict[str, float]: ...


def outcome_class(outcome: str) -> str:
    """A CSS class for any outcome word ("n/a" -> "outcome-na"), new outcomes included."""
    return "outcome-" + (re.sub(r"[^a-z0-9-]", "", outcome.lower()) or "unknown")


def anchor(scenario: str, target: str) -> str:
    """The id of a cell's details section."""
    return f"{scenario}--{target}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _href(path: str, directory: bool = False) -> str:
    """An escaped relative href for a path inside the run directory."""
    return _e(quote(path.strip("/"), safe="/") + ("/" if directory else ""))


def _link(run_dir: Path | None, path: str, label: str, directory: bool = False) -> str:
    """A link to path, or just its label when run_dir is known and lacks it (no dead links)."""
    if run_dir is not None and not (run_dir / path).exists():
        return _e(label)
    return f'<a href="{_href(path, directory)}">{_e(label)}</a>'


def _artifacts(scenario: str, target: str, cell: dict[str, object]) -> str:
    return str(cell.get("artifacts") or f"{scenario}/{target}")


def _cell(scenario: str, target: str, cell: dict[str, object] | None,
          run_dir: Path | None) -> str:
    if cell is None:
        return "<td></td>"  # not asked for in this run
    outcome = str(cell.get("outcome", ""))
    title = first_line(cell.get("detail"))
    attrs = f' class="{outcome_class(outcome)}"' + (f' title="{_e(title)}"' if title else "")
    word = (_e(outcome) if outcome in NOT_RUN
            else _link(run_dir, _artifacts(scenario, target, cell), outcome, directory=True))
    more = ""
    if outcome != "pass":
        more = f' <a href="#{_e(quote(anchor(scenario, target)))}" title="details">&#8595;</a>'
    return f"<td{attrs}>{word}{more}</td>"


def _details(scenario: str, target: str, cell: dict[str, object], run_dir: Path | None) -> str:
    outcome = str(cell.get("outcome", ""))
    parts = [f'<section id="{_e(anchor(scenario, target))}">',
             f'<h2>{_e(scenario)} on {_e(target)}: '
             f'<span class="{outcome_class(outcome)}">{_e(outcome)}</span></h2>']
    if outcome not in NOT_RUN:
        where = _artifacts(scenario, target, cell)
        links = [_link(run_dir, where, "artifacts", directory=True)]
        links += [f'<a href="{_href(f"{where}/{log}")}">{log}</a>' for log in LOGS
                  if run_dir is None or (run_dir / where / log).is_file()]
        parts.append("<p>" + " | ".join(links) + "</p>")
    if str(cell.get("detail") or "").strip():
        parts.append(f"<pre>{_e(str(cell['detail']).rstrip())}</pre>")
    attempts = cell.get("attempts")
    if isinstance(attempts, list) and attempts:
        items = []
        for number, attempt in enumerate(attempts, 1):
            if not isinstance(attempt, dict):
                continue
            label = f"attempt {number}"
            path = attempt.get("artifacts")
            item = _link(run_dir, str(path), label, directory=True) if path else _e(label)
            item += f" ({_e(attempt.get('outcome', '?'))})"
            if first_line(attempt.get("detail")):
                item += f": {_e(first_line(attempt.get('detail')))}"
            items.append(f"<li>{item}</li>")
        parts.append("<h3>Earlier attempts</h3>\n<ul>" + "".join(items) + "</ul>")
    findings = cell.get("findings")
    if isinstance(findings, list) and findings:
        parts.append("<h3>Findings</h3>\n<ul>"
                     + "".join(f"<li>{_e(f)}</li>" for f in findings) + "</ul>")
    return "\n".join(parts) + "\n</section>"


def summary(matrix: MatrixView) -> str:
    """The line above the table: counts per outcome and, when known, time per target."""
    counts = ", ".join(f"{n} {k}" for k, n in sorted(matrix.counts().items()))
    text = f"({counts})"
    per_target = matrix.seconds_per_target()
    if any(per_target.values()):
        text += " &mdash; time per target: " + ", ".join(
            f"{_e(t)} {s:.0f} s" for t, s in per_target.items())
    return text


def matrix_html(matrix: MatrixView, run_dir: Path | None = None) -> str:
    """The page for matrix.html. With run_dir (the directory the page is written to), links
    go only to artifacts that exist there; without it, to where they are expected. The
    result is ASCII (non-ASCII as character references), so any file encoding holds it."""
    scenarios = sorted(matrix.cells)
    head = "<tr><th>scenario</th>" + "".join(f"<th>{_e(t)}</th>" for t in matrix.targets)
    rows = [f"<tr><th>{_e(name)}</th>"
            + "".join(_cell(name, t, matrix.cells[name].get(t), run_dir) for t in matrix.targets)
            + "</tr>" for name in scenarios]
    sections = [_details(name, t, cell, run_dir)
                for name in scenarios for t in matrix.targets
                if (cell := matrix.cells[name].get(t)) is not None
                and cell.get("outcome") != "pass"]
    heading = TITLE + (f": {_e(run_dir.name)}" if run_dir is not None else "")
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{TITLE}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{heading}</h1>", f'<p class="summary">{summary(matrix)}</p>',
        "<table>", f"<thead>{head}</tr></thead>", "<tbody>", *rows, "</tbody>", "</table>",
        *sections, "</body>", "</html>", ""])
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")
