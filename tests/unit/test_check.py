"""`sysext-harness check`: reading images on the host, choosing targets, writing the scenario.

Images are made with the real mksquashfs and mkfs.erofs; nothing boots here (the VM side
is tests/integration/test_check.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.check import (
    CheckRequest,
    check_architecture,
    check_unit_names,
    default_targets,
    image_matches,
    scenario_data,
    write_scenario,
)
from harness.cli import main
from harness.errors import ConfigError
from harness.extensions.inspect import inspect_image, parse_release, stem_of
from harness.run import run
from harness.scenario import load_scenario
from harness.scenario.model import ExpectStep, InstallStep, RebootStep, RunStep
from harness.targets.registry import all_targets, get_target

needs_tools = pytest.mark.skipif(
    not (shutil.which("mksquashfs") and shutil.which("mkfs.erofs")),
    reason="squashfs-tools and erofs-utils are installed by make setup")


def tree(root: Path, name: str = "tool", release: str = "ID=_any\n",
         kind: str = "sysext") -> Path:
    rel_dir = "usr/lib/extension-release.d" if kind == "sysext" else "etc/extension-release.d"
    unit_dir = "usr/lib/systemd/system" if kind == "sysext" else "etc/systemd/system"
    (root / rel_dir).mkdir(parents=True)
    (root / rel_dir / f"extension-release.{name}").write_text(release)
    (root / unit_dir / "multi-user.target.wants").mkdir(parents=True)
    (root / unit_dir / f"{name}.service").write_text("[Service]\nExecStart=/bin/true\n")
    (root / unit_dir / f"{name}.socket").write_text("[Socket]\nListenStream=1\n")
    return root


def squashfs(src: Path, out: Path) -> Path:
    run(["mksquashfs", src, out, "-quiet", "-no-progress", "-all-root"])
    return out


def erofs(src: Path, out: Path) -> Path:
    run(["mkfs.erofs", "--quiet", out, src])
    return out


# --------------------------------------------------------------------------- inspecting


@needs_tools
@pytest.mark.parametrize("fmt", ["directory", "squashfs", "erofs"])
def test_inspect_reads_release_and_units(tmp_path: Path, fmt: str) -> None:
    src = tree(tmp_path / "tool", release='ID=flatcar\nSYSEXT_LEVEL="1.0"\n# c\n')
    path = {"directory": lambda: src,
            "squashfs": lambda: squashfs(src, tmp_path / "tool-1.2-x86-64.raw"),
            "erofs": lambda: erofs(src, tmp_path / "tool.raw")}[fmt]()
    info = inspect_image(path)
    assert (info.format, info.type, info.name) == (fmt, "sysext", "tool")
    assert info.release == {"ID": "flatcar", "SYSEXT_LEVEL": "1.0"}
    assert info.units == ("tool.service", "tool.socket")
    assert "extension-release.tool" in info.summary()


@needs_tools
def test_inspect_confext(tmp_path: Path) -> None:
    info = inspect_image(squashfs(tree(tmp_path / "t", "conf", kind="confext"),
                                  tmp_path / "conf.raw"))
    assert (info.type, info.name, info.units) == ("confext", "conf", ("conf.service",
                                                                      "conf.socket"))


@needs_tools
def test_bad_images_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        inspect_image(tmp_path / "missing.raw")
    (tmp_path / "text.raw").write_text("hello\n" * 300)
    with pytest.raises(ConfigError, match="not an extension image.*squashfs or erofs"):
        inspect_image(tmp_path / "text.raw")
    empty = tmp_path / "empty"
    (empty / "usr/bin").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no extension-release file"):
        inspect_image(squashfs(empty, tmp_path / "empty.raw"))
    two = tree(tmp_path / "two")
    (two / "usr/lib/extension-release.d/extension-release.other").write_text("ID=_any\n")
    with pytest.raises(ConfigError, match="2 extension-release files.*none is named"):
        inspect_image(two)
    # One named after the image is what systemd reads first: that one counts.
    (two / "usr/lib/extension-release.d/extension-release.two").write_text("ID=_any\n")
    (two / "usr/lib/extension-release.d/extension-release.tool").unlink()
    assert inspect_image(two).name == "two"


def test_parse_release_and_stems() -> None:
    assert parse_release('ID=a\nVERSION_ID="1 2"\nX=\'y\'\n#ID=no\nbad line\nE="a\\"b"\n') == {
        "ID": "a", "VERSION_ID": "1 2", "X": "y", "E": 'a"b'}
    assert [stem_of(n) for n in ("a.raw", "b.sysext.raw", "c.confext.raw", "d")] == [
        "a", "b", "c", "d"]


# --------------------------------------------------------------------------- targets


def info_with(tmp_path: Path, release: str, kind: str = "sysext"):  # type: ignore[no-untyped-def]
    return inspect_image(tree(tmp_path / f"i{abs(hash(release + kind))}", release=release,
                              kind=kind))


def test_targets_follow_the_release_id(tmp_path: Path) -> None:
    defaults = [t for t in all_targets() if t.default]
    flatcar = info_with(tmp_path, "ID=flatcar\n")
    chosen = default_targets(CheckRequest(images=(flatcar,)), defaults)
    assert chosen and {t.persona.name for t in chosen} == {"flatcar"}
    anything = info_with(tmp_path, "ID=_any\n")
    assert default_targets(CheckRequest(images=(anything,)), defaults) == defaults
    # ID_LIKE (Flatcar's os-release says ID_LIKE=coreos) counts from 257 on.
    coreos = info_with(tmp_path, "ID=coreos\n")
    ok, _ = image_matches(coreos, get_target("refos-257-flatcar"))
    assert ok
    ok, why = image_matches(coreos, get_target("refos-252-flatcar"))
    assert not ok and "ID=coreos" in why
    with pytest.raises(ConfigError, match="no default target takes") as exc:
        default_targets(CheckRequest(images=(info_with(tmp_path, "ID=arch\n"),)), defaults)
    assert "--target" in str(exc.value)


def test_confext_skips_252_and_architecture_is_checked(tmp_path: Path) -> None:
    conf = info_with(tmp_path, "ID=_any\n", kind="confext")
    ok, why = image_matches(conf, get_target("refos-252-fcos"))
    assert not ok and "confext" in why
    arm = info_with(tmp_path, "ID=_any\nARCHITECTURE=arm64\n")
    with pytest.raises(ConfigError, match="ARCHITECTURE.*arm64.*x86-64"):
        check_architecture(arm, all_targets())


def test_unit_names() -> None:
    assert check_unit_names(["docker.socket", "a@b.service"]) == ("docker.socket", "a@b.service")
    for bad in ("docker", "x.unknown", "a b.service", "$(x).service", ".service"):
        with pytest.raises(ConfigError, match="not a unit name"):
            check_unit_names([bad])


# --------------------------------------------------------------------------- scenario


def test_written_scenario_loads_and_checks_what_it_says(tmp_path: Path) -> None:
    info = inspect_image(tree(tmp_path / "tool"))
    script = tmp_path / "t.sh"
    script.write_text("#!/bin/bash\nset -e\ntool --version\n")
    request = CheckRequest(images=(info,), units=("tool.socket",), commands=("tool -h",),
                           test_script=script)
    path = write_scenario(request, tmp_path / "out")
    assert path == tmp_path / "out" / "scenarios" / "check-tool.yaml"
    text = path.read_text()
    assert text.startswith("# Written by `sysext-harness check`") and "&id" not in text
    scenario = load_scenario(path)
    kinds = [type(s) for s in scenario.steps]
    assert kinds.count(RebootStep) == 1 and kinds.count(InstallStep) == 1
    install = next(s for s in scenario.steps if isinstance(s, InstallStep))
    assert (install.extension, install.as_name, install.dir) == ("tool", "tool", None)
    boot = next(s for s in scenario.steps
                if isinstance(s, ExpectStep) and s.name == "merged at boot")
    assert boot.expect is not None and dict(boot.expect.merged_into or {}) == {
        "/usr": frozenset({"tool"})}
    shells = [s.shell for s in scenario.steps if isinstance(s, RunStep)]
    assert "tool -h" in shells
    assert any("tool --version" in s and "#!/bin/bash" in s for s in shells)
    assert any("comm -13" in s for s in shells)


def test_no_reboot_starts_the_units_instead(tmp_path: Path) -> None:
    info = inspect_image(tree(tmp_path / "tool"))
    data = scenario_data(CheckRequest(images=(info,), units=("tool.service",), reboot=False))
    names = [s.get("name", "") for s in data["steps"]]
    assert "boot with the extension installed" not in names
    assert "start tool.service" in names


def test_confext_goes_to_var_lib_confexts(tmp_path: Path) -> None:
    info = inspect_image(tree(tmp_path / "c", "conf", kind="confext"))
    data = scenario_data(CheckRequest(images=(info,)))
    install = next(s for s in data["steps"] if "install" in s)
    assert install["dir"] == "/var/lib/confexts"
    assert data["applies_to"]["systemd"] == ">=254"
    assert any(s.get("run") == "systemd-confext refresh" for s in data["steps"])


def test_same_release_name_twice_is_refused(tmp_path: Path) -> None:
    a = inspect_image(tree(tmp_path / "a"))
    b = inspect_image(tree(tmp_path / "b"))
    with pytest.raises(ConfigError, match="same extension-release name"):
        scenario_data(CheckRequest(images=(a, b)))


# --------------------------------------------------------------------------- CLI


def test_cli_bad_input_exits_2_before_any_vm(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    good = tree(tmp_path / "tool")
    cases = [
        ([str(tmp_path / "nope.raw")], "IMAGE: no such file"),
        ([str(good), "--unit", "tool"], "--unit: not a unit name"),
        ([str(good), "--test", str(tmp_path / "missing.sh")], "--test: no such file"),
        ([str(good), "--target", "refos-999-*"], "--target: no target matches"),
        ([str(inspect_image(tree(tmp_path / "arch", release="ID=arch\n")).path)],
         "no default target takes"),
    ]
    for argv, message in cases:
        code = main(["check", *argv, "--artifacts", str(tmp_path / "art")])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err, (argv, err)
    assert not (tmp_path / "art").exists()  # nothing written, nothing booted


def test_trust_installs_the_certificate_as_pem(tmp_path: Path) -> None:
    from harness.extensions.signing import generate_key_pair

    pair = generate_key_pair(tmp_path / "keys")
    info = inspect_image(tree(tmp_path / "tool"))
    data = scenario_data(CheckRequest(images=(info,), trust=(pair.certificate,)))
    trust = next(s for s in data["steps"] if s["name"].startswith("trust "))
    assert "/etc/verity.d/check-" in trust["run"] and "BEGIN CERTIFICATE" in trust["run"]
    names = [s["name"] for s in data["steps"]]
    assert names.index(trust["name"]) < next(i for i, n in enumerate(names)
                                             if n.startswith("install "))
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="--trust: not a readable X.509"):
        scenario_data(CheckRequest(images=(info,), trust=(tmp_path / "junk.crt",)))


@needs_tools
@pytest.mark.parametrize("fmt", ["directory", "squashfs", "erofs"])
def test_files_outside_the_merged_hierarchies_are_named(tmp_path: Path, fmt: str) -> None:
    src = tree(tmp_path / "tool")
    (src / "etc").mkdir()
    (src / "etc/tool.conf").write_text("x\n")
    (src / "opt/tool").mkdir(parents=True)
    path = {"directory": lambda: src,
            "squashfs": lambda: squashfs(src, tmp_path / "tool.raw"),
            "erofs": lambda: erofs(src, tmp_path / "tool.erofs")}[fmt]()
    info = inspect_image(path)
    assert info.top_level == ("etc", "opt", "usr")
    assert info.ignored_entries() == ("etc",)


def test_dry_run_writes_the_scenario_and_boots_nothing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    good = tree(tmp_path / "tool", release="ID=flatcar\nSYSEXT_LEVEL=1.0\n")
    code = main(["check", str(good), "--dry-run", "--unit", "tool.socket",
                 "--artifacts", str(tmp_path / "art")])
    out = capsys.readouterr().out
    assert code == 0
    assert "extension-release.tool [ID=flatcar SYSEXT_LEVEL=1.0]" in out
    targets = out.split("targets: ", 1)[1].splitlines()[0].split(", ")
    assert targets and all(t.endswith("-flatcar") for t in targets)
    scenario = tmp_path / "art/check/scenarios/check-tool.yaml"
    assert load_scenario(scenario).name == "check-tool"
    assert not any((tmp_path / "art").glob("run-*"))  # no run directory: nothing booted


def test_strict_turns_warnings_into_a_failure(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    tool = tree(tmp_path / "tool", release="ID=flatcar\nSYSEXT_LEVEL=1.0\n")
    (tool / "etc").mkdir()
    (tool / "etc/tool.conf").write_text("x\n")
    argv = ["check", str(tool), "--dry-run", "--artifacts", str(tmp_path / "art")]
    assert main(argv) == 0
    assert "warning: tool: sysext merges only /usr, /opt; " in capsys.readouterr().err
    assert main([*argv, "--strict"]) == 1
    assert "error: --strict: 1 warning(s) fail the check" in capsys.readouterr().err
    clean = tree(tmp_path / "clean" / "tool", release="ID=flatcar\nSYSEXT_LEVEL=1.0\n")
    assert main(["check", str(clean), "--dry-run", "--strict",
                 "--artifacts", str(tmp_path / "art2")]) == 0
