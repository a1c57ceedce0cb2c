"""matrix.html as a real browser sees it: headless Chromium loads the page from file://,
and the DOM it returns must have the right cells, and every link in it must lead to a file
or directory of the run. Nothing is skipped: without Chromium the test fails and says how
to install it. No machine boots here."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import unquote, urldefrag

import pytest
from html_page import Page

from harness.report import Matrix
from harness.report_html import TITLE, matrix_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail("Chromium is not installed; run `make setup` (scripts/setup-host.sh installs "
                "Debian's `chromium` package)")


def browse(browser: str, page: Path, *args: str) -> str:
    """Run headless Chromium on page, return its stdout. As root in a container it needs
    --no-sandbox; a throwaway profile keeps it off the user's and lets two runs go at once."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={profile}", *args, page.as_uri()],
            capture_output=True, text=True, timeout=120, check=True).stdout


def run_with_artifacts(run: Path) -> Matrix:
    """A matrix of every kind of cell, with the files a run leaves in its cells' directories."""
    m = Matrix()
    targets = ("refos-257-flatcar", "refos-252-flatcar")
    m.add("merge-squashfs", targets[0], "pass", seconds=20.0)
    m.add("merge-squashfs", targets[1], "fail", "step 3 (merge): expected exit 0, got 1\n"
          "stderr: <Failed to merge> & more", seconds=31.5)
    m.add("refresh", targets[0], "flaky", "passed on the rerun", seconds=40.0)
    m.add("refresh", targets[1], "known", "known failure: systemd#31234", seconds=12.0)
    m.add("confext-merge", targets[1], "n/a", "systemd-confext is new in 254")
    m.add("confext-merge", targets[0], "pass", seconds=18.0)
    fail = m.cells["merge-squashfs"][targets[1]]
    fail["attempts"] = [{"outcome": "error", "detail": "QEMU aborted",
                         "artifacts": f"merge-squashfs/{targets[1]}/attempt-1"}]
    fail["findings"] = ["kernel: BUG: <oops>", "unit foo.service failed"]
    flaky = m.cells["refresh"][targets[0]]
    flaky["attempts"] = [{"outcome": "fail", "detail": "timeout",
                          "artifacts": f"refresh/{targets[0]}/attempt-1"}]
    for scenario, row in m.cells.items():
        for target, cell in row.items():
            if cell["outcome"] == "n/a":
                continue
            out = run / scenario / target
            out.mkdir(parents=True)
            for name in ("steps.log", "console.log", "machine.log"):
                (out / name).write_text(f"{name} of {scenario} on {target}\n")
            if cell["outcome"] != "fail":  # a failed run that never got the journal
                (out / "journal.txt").write_text("-- journal --\n")
            attempts = cell.get("attempts")
            for attempt in attempts if isinstance(attempts, list) else []:
                (run / attempt["artifacts"]).mkdir()
                (run / attempt["artifacts"] / "console.log").write_text("aborted\n")
    return m


def test_chromium_renders_the_matrix_and_every_link_resolves(chromium: str,
                                                              tmp_path: Path) -> None:
    run = tmp_path / "run-20261207-120000"
    run.mkdir()
    matrix = run_with_artifacts(run)
    page = run / "matrix.html"
    page.write_text(matrix_html(matrix, run), encoding="utf-8")

    dom = Page(browse(chromium, page, "--dump-dom"))

    assert dom.title == TITLE
    arrow = "\u2193"
    assert dom.rows == [
        [("", "", "scenario"), ("", "", "refos-257-flatcar"), ("", "", "refos-252-flatcar")],
        [("", "", "confext-merge"), ("outcome-pass", "", "pass"),
         ("outcome-na", "systemd-confext is new in 254", f"n/a {arrow}")],
        [("", "", "merge-squashfs"), ("outcome-pass", "", "pass"),
         ("outcome-fail", "step 3 (merge): expected exit 0, got 1", f"fail {arrow}")],
        [("", "", "refresh"), ("outcome-flaky", "passed on the rerun", f"flaky {arrow}"),
         ("outcome-known", "known failure: systemd#31234", f"known {arrow}")],
    ]
    for scenario, target in [("confext-merge", "refos-252-flatcar"),
                             ("merge-squashfs", "refos-252-flatcar"),
                             ("refresh", "refos-257-flatcar"),
                             ("refresh", "refos-252-flatcar")]:
        assert f"{scenario}--{target}" in dom.ids

    for href in dom.hrefs:
        path, fragment = urldefrag(href)
        if not path:
            assert fragment in dom.ids, href
            continue
        target = (page.parent / unquote(path)).resolve()
        assert target.is_relative_to(run) and target.exists(), href
    hrefs = set(dom.hrefs)
    fail = "merge-squashfs/refos-252-flatcar"
    assert {f"{fail}/", f"{fail}/steps.log", f"{fail}/console.log", f"{fail}/attempt-1/",
            "refresh/refos-257-flatcar/attempt-1/", "#merge-squashfs--refos-252-flatcar"} <= hrefs
    assert f"{fail}/journal.txt" not in hrefs  # not written: not linked
    assert "refresh/refos-252-flatcar/journal.txt" in hrefs  # the others' journals are

    shot = tmp_path / "matrix.png"
    browse(chromium, page, f"--screenshot={shot}", "--window-size=1200,900")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert int.from_bytes(data[16:20], "big") == 1200  # IHDR width: the page was laid out
