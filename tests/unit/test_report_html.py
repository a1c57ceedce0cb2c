"""matrix.html: cells, classes, escaping, links to artifacts and the details sections."""

from __future__ import annotations

from pathlib import Path

from html_page import Page

from harness.report import Matrix
from harness.report_html import TITLE, matrix_html, outcome_class


def _matrix() -> Matrix:
    m = Matrix()
    m.add("merge-erofs", "refos-257-flatcar", "pass", seconds=4.0)
    m.add("merge-erofs", "refos-252-flatcar", "fail", "step 2: <b>exit 1</b> & more\nline 2",
          seconds=6.0)
    m.add("confext-merge", "refos-252-flatcar", "n/a", "systemd-confext is new in 254")
    m.add("confext-merge", "refos-257-flatcar", "flaky", "QEMU aborted", seconds=9.0)
    fail = m.cells["merge-erofs"]["refos-252-flatcar"]
    fail["attempts"] = [{"outcome": "error", "detail": "QEMU aborted\nat 0x1",
                         "artifacts": "merge-erofs/refos-252-flatcar/attempt-1"}]
    fail["findings"] = ["kernel: oops <here>"]
    return m


def test_title_table_cells_and_classes() -> None:
    page = Page(matrix_html(_matrix()))
    assert page.title == TITLE
    # rows are sorted by scenario, columns follow matrix.targets
    assert [(c["class"], c["text"]) for c in page.cells] == [
        ("outcome-flaky", "flaky \u2193"), ("outcome-na", "n/a \u2193"),
        ("outcome-pass", "pass"), ("outcome-fail", "fail \u2193")]
    assert page.cells[3]["title"] == "step 2: <b>exit 1</b> & more"
    assert page.cells[2]["title"] == ""


def test_outcome_classes_are_css_safe() -> None:
    assert outcome_class("n/a") == "outcome-na"
    assert outcome_class("known") == "outcome-known"
    assert outcome_class('x" onclick="y') == "outcome-xonclicky"
    assert outcome_class("/") == "outcome-unknown"


def test_run_cells_link_artifacts_and_details_not_run_cells_only_details() -> None:
    text = matrix_html(_matrix())
    assert '<a href="merge-erofs/refos-257-flatcar/">pass</a>' in text
    assert '<a href="merge-erofs/refos-252-flatcar/">fail</a>' in text
    assert '<a href="#merge-erofs--refos-252-flatcar"' in text
    assert 'href="confext-merge/refos-252-flatcar/"' not in text  # n/a: nothing ran
    assert '<a href="#confext-merge--refos-252-flatcar"' in text
    assert 'href="#merge-erofs--refos-257-flatcar"' not in text  # a pass has no details


def test_details_sections_for_every_non_pass_cell() -> None:
    text = matrix_html(_matrix())
    page = Page(text)
    assert page.ids == ["confext-merge--refos-257-flatcar", "confext-merge--refos-252-flatcar",
                        "merge-erofs--refos-252-flatcar"]
    section = text[text.index('id="merge-erofs--refos-252-flatcar"'):]
    assert "<pre>step 2: &lt;b&gt;exit 1&lt;/b&gt; &amp; more\nline 2</pre>" in section
    for log in ("steps.log", "console.log", "journal.txt"):  # no run_dir: all linked
        assert f'<a href="merge-erofs/refos-252-flatcar/{log}">{log}</a>' in section
    assert ('<a href="merge-erofs/refos-252-flatcar/attempt-1/">attempt 1</a> (error): '
            "QEMU aborted</li>") in section
    assert "<li>kernel: oops &lt;here&gt;</li>" in section
    na = text[text.index('id="confext-merge--refos-252-flatcar"'):]
    na = na[:na.index("</section>")]
    assert "<pre>systemd-confext is new in 254</pre>" in na and "href" not in na


def test_counts_and_time_per_target_line() -> None:
    text = matrix_html(_matrix())
    assert "(1 fail, 1 flaky, 1 n/a, 1 pass)" in text
    assert "time per target: refos-257-flatcar 13 s, refos-252-flatcar 6 s" in text
    m = Matrix()
    m.add("a", "t", "n/a", "no")
    assert "time per target" not in matrix_html(m)


def test_with_run_dir_links_only_what_exists(tmp_path: Path) -> None:
    m = _matrix()
    cell = tmp_path / "merge-erofs" / "refos-252-flatcar"
    cell.mkdir(parents=True)
    (cell / "steps.log").write_text("step 1\n")
    (tmp_path / "merge-erofs" / "refos-257-flatcar").mkdir()
    text = matrix_html(m, tmp_path)
    assert f"<h1>{TITLE}: {tmp_path.name}</h1>" in text
    assert 'href="merge-erofs/refos-252-flatcar/steps.log"' in text
    assert "console.log" not in text and "journal.txt" not in text
    assert "attempt-1" not in text and "attempt 1 (error)" in text  # set aside, then lost
    assert '<a href="merge-erofs/refos-257-flatcar/">pass</a>' in text
    # the flaky cell's directory is missing: its word is not a dead link
    assert 'href="confext-merge/refos-257-flatcar/"' not in text
    for href in Page(text).hrefs:
        assert href.startswith("#") or (tmp_path / href).exists()


def test_user_text_is_escaped_and_hrefs_quoted() -> None:
    m = Matrix()
    m.add('we"ird <s>', "t&1", "fail", '"><script>alert(1)</script>')
    m.cells['we"ird <s>']["t&1"]["artifacts"] = "a b/c?d#e"
    text = matrix_html(m)
    assert "<script>" not in text and "<s>" not in text
    assert "<th>t&amp;1</th>" in text and "<th>we&quot;ird &lt;s&gt;</th>" in text
    assert '<a href="a%20b/c%3Fd%23e/">fail</a>' in text
    assert 'id="we&quot;ird &lt;s&gt;--t&amp;1"' in text
    assert 'href="#we%22ird%20%3Cs%3E--t%261"' in text
    page = Page(text)
    assert page.cells[0]["title"] == '"><script>alert(1)</script>'
    assert page.ids == ['we"ird <s>--t&1']


def test_page_is_ascii() -> None:
    m = Matrix()
    m.add("a", "t", "fail", "r\u00e9sum\u00e9 \u2713")
    text = matrix_html(m)
    assert text.isascii() and "r&#233;sum&#233; &#10003;" in text
