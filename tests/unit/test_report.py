"""The results matrix: outcomes, reasons and time per target, in text, Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from harness.report import Matrix


def _matrix() -> Matrix:
    m = Matrix()
    m.add("merge-erofs", "refos-257-flatcar", "pass", seconds=4.24)
    m.add("merge-erofs", "refos-252-flatcar", "fail", "step 2 (merge): expected exit 0\nmore",
          seconds=6.0)
    m.add("confext-merge", "refos-252-flatcar", "n/a", "systemd-confext is new in 254")
    m.add("confext-merge", "refos-257-flatcar", "pass", seconds=3.0)
    return m


def test_counts_and_seconds_per_target() -> None:
    m = _matrix()
    assert m.counts() == {"pass": 2, "fail": 1, "n/a": 1}
    assert m.seconds_per_target() == {"refos-257-flatcar": 7.2, "refos-252-flatcar": 6.0}


def test_text_lists_every_cell_and_the_time() -> None:
    text = _matrix().text()
    assert "confext-merge" in text and "FAIL" in text and "n/a" in text
    assert "(1 fail, 1 n/a, 2 pass)" in text
    assert text.endswith("time per target: refos-257-flatcar 7 s, refos-252-flatcar 6 s")


def test_markdown_and_json_files(tmp_path: Path) -> None:
    md, js = _matrix().write(tmp_path)
    text = md.read_text()
    assert "| merge-erofs | pass | FAIL |" in text
    assert "- **merge-erofs** on `refos-252-flatcar` (fail): step 2 (merge): expected exit 0" \
        in text
    assert "Time per target: refos-257-flatcar 7 s" in text
    data = json.loads(js.read_text())
    assert data["results"]["merge-erofs"]["refos-257-flatcar"] == {
        "outcome": "pass", "detail": "", "seconds": 4.2}
    assert "seconds" not in data["results"]["confext-merge"]["refos-252-flatcar"]
    assert data["seconds_per_target"]["refos-252-flatcar"] == 6.0


def test_no_time_line_without_durations() -> None:
    m = Matrix()
    m.add("id-any", "refos-254-fcos", "n/a", "no")
    assert "time per target" not in m.text()


def test_tap_has_one_point_per_cell_with_skips_and_failures() -> None:
    lines = _matrix().tap().splitlines()
    assert lines[:2] == ["TAP version 13", "1..4"]
    points = [line for line in lines if line.startswith(("ok ", "not ok "))]
    assert points == [
        "ok 1 - confext-merge on refos-257-flatcar",
        "ok 2 - confext-merge on refos-252-flatcar # SKIP systemd-confext is new in 254",
        "ok 3 - merge-erofs on refos-257-flatcar",
        "not ok 4 - merge-erofs on refos-252-flatcar",
    ]
    block = lines[lines.index("not ok 4 - merge-erofs on refos-252-flatcar") + 1:]
    assert block == ["  ---", "  outcome: fail", "  seconds: 6.0", "  message: |",
                     "    step 2 (merge): expected exit 0", "    more", "  ..."]


def test_tap_of_an_empty_run_plans_nothing() -> None:
    assert Matrix().tap() == "TAP version 13\n1..0\n"


def test_flaky_and_known_cells_in_json_markdown_and_tap(tmp_path: Path) -> None:
    m = Matrix()
    attempts = [{"outcome": "fail", "detail": "step 1 failed\nmore", "artifacts": "a/t/attempt-1",
                 "findings": ["segfault (journal): x"]},
                {"outcome": "pass", "detail": "", "artifacts": "a/t", "findings": []}]
    m.add("a", "t", "flaky", attempts=attempts)
    m.add("b", "t", "known", "known failure (k.yaml:1 entry [0]): why (https://x/1)")
    m.add("c", "t", "pass", note="entry [1] can go")
    assert m.cells["a"]["t"]["findings"] == ["segfault (journal): x"]
    assert m.counts() == {"flaky": 1, "known": 1, "pass": 1}
    md = m.markdown()
    assert "| a | FLAKY |" in md and "failed first: step 1 failed (a/t/attempt-1)" in md
    assert "**c** on `t`: entry [1] can go" in md
    tap = m.tap()
    assert "ok 1 - a on t (flaky: failed, then passed on a rerun)" in tap
    assert "not ok 2 - b on t # TODO known failure (k.yaml:1 entry [0])" in tap
    m.write(tmp_path)
    assert (tmp_path / "matrix.html").exists()
