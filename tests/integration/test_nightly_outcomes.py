"""Flaky and known runs, end to end: pytest runs real scenarios on a real machine with
`--rerun-failed 1` and a known-failures file, and the matrix (JSON, HTML, TAP), JUnit and
the terminal say `flaky` and `known`, never a plain pass or failure."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

ROOT = Path(__file__).resolve().parents[2]


class _FailsOnce(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first request and 200 after: a service that hiccups once."""

    requests = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests += 1
        self.send_response(503 if type(self).requests == 1 else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def hiccuping_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailsOnce)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def _scenario(directory: Path, name: str, command: str) -> None:
    (directory / f"{name}.yaml").write_text(
        f"description: {name}\nsteps:\n  - run: {json.dumps(command)}\n")


KNOWN = """\
- scenario: known-broken
  reason: breaks on purpose
  tracker: https://example.org/issues/1
- scenario: expired-broken
  reason: was broken once
  tracker: https://example.org/issues/2
  until: 2020-01-31
- scenario: fixed-now
  target: refos-257-flatcar
  reason: used to break
  tracker: https://example.org/issues/3
"""


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def test_flaky_known_expired_and_superfluous_entries(hiccuping_server: int,
                                                     tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    _scenario(scenarios, "flaky-once", "python3 -c \"import urllib.request; urllib.request."
              f"urlopen('http://10.0.2.2:{hiccuping_server}/')\"")
    _scenario(scenarios, "known-broken", "false")
    _scenario(scenarios, "expired-broken", "false")
    _scenario(scenarios, "fixed-now", "true")
    known = tmp_path / "known.yaml"

    # A bad entry: exit 2 before anything boots, naming file, entry and key.
    known.write_text(KNOWN.replace("tracker: https://example.org/issues/2", "tracker: nope"))
    bad = _pytest(str(scenarios), "--target", "refos-257-flatcar", "--known-failures",
                  str(known), cwd=ROOT)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert f"{known}:" in bad.stdout + bad.stderr and "[1].tracker" in bad.stdout + bad.stderr

    known.write_text(KNOWN)
    artifacts, junit, tap = tmp_path / "artifacts", tmp_path / "junit.xml", tmp_path / "out.tap"
    run = _pytest(str(scenarios), "--target", "refos-257-flatcar", "--rerun-failed", "1",
                  "--known-failures", str(known), "--artifacts", str(artifacts),
                  f"--junitxml={junit}", "--tap", str(tap), "-rA", cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # the expired entry's failure counts
    assert _FailsOnce.requests == 2, out  # the flaky scenario ran twice

    matrix = json.loads((artifacts / "latest" / "matrix.json").read_text())
    cells = {name: row["refos-257-flatcar"] for name, row in matrix["results"].items()}
    assert {n: c["outcome"] for n, c in cells.items()} == {
        "flaky-once": "flaky", "known-broken": "known", "expired-broken": "fail",
        "fixed-now": "pass"}
    assert matrix["counts"] == {"flaky": 1, "known": 1, "fail": 1, "pass": 1}
    flaky = cells["flaky-once"]
    assert [a["outcome"] for a in flaky["attempts"]] == ["fail", "pass"]
    first = artifacts / "latest" / flaky["attempts"][0]["artifacts"]
    assert first.name == "attempt-1" and "503" in (first / "steps.log").read_text()
    assert "breaks on purpose" in cells["known-broken"]["detail"]
    assert [a["outcome"] for a in cells["known-broken"]["attempts"]] == ["fail", "fail"]
    assert "expired after 2020-01-31" in cells["expired-broken"]["note"]
    assert "expired after 2020-01-31" in cells["expired-broken"]["detail"]
    assert "the entry can go" in cells["fixed-now"]["note"]
    assert "the entry can go" in out  # a pytest warning
    assert "entry [2] (https://example.org/issues/3): every run it matches passed" in out

    # classname is the file's dotted path from pytest's rootdir, which depends on where
    # the test runs: the scenario file's name ends it.
    cases = {str(c.get("classname")).rsplit(".", 2)[-2]: c
             for c in ET.parse(junit).getroot().iter("testcase")}
    flaky_case = cases["flaky-once"]
    props = {p.get("name"): p.get("value") for p in flaky_case.iter("property")}
    assert props.get("sysext_harness_outcome") == "flaky", ET.tostring(flaky_case)
    assert cases["known-broken"].find("skipped") is not None  # xfail
    assert cases["expired-broken"].find("failure") is not None

    text = tap.read_text()
    assert "# TODO known failure" in text and "(flaky: failed, then passed on a rerun)" in text
    assert "1 flaky" in out and "1 xfailed" in out, out[-3000:]
    html = (artifacts / "latest" / "matrix.html").read_text()
    assert "outcome-flaky" in html and "outcome-known" in html
