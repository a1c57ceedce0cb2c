"""What `check` tells an author before booting: name mismatches and release-file mistakes."""

from __future__ import annotations

from pathlib import Path

from harness.extensions.inspect import ImageInfo
from harness.extensions.lint import host_findings, install_name, name_findings, release_findings


def info(path: str, release_name: str, release: dict[str, str], *, fmt: str = "squashfs",
         kind: str = "sysext") -> ImageInfo:
    return ImageInfo(path=Path(path), format=fmt, type=kind, release_name=release_name,
                     release=release, units=())


def test_the_installed_name_must_match_the_release_file() -> None:
    good = info("/x/foo.raw", "foo", {"ID": "_any"})
    assert name_findings(good, None) == []
    bakery = info("/x/docker-27.3.1-x86-64.raw", "docker", {"ID": "flatcar"})
    (found,) = name_findings(bakery, None)
    assert found.severity == "error" and found.code == "name-mismatch"
    assert "shipped as docker-27.3.1-x86-64.raw, it needs extension-release." \
           "docker-27.3.1-x86-64, but it holds extension-release.docker" in found.message
    assert "--as docker.raw" in found.fix
    assert name_findings(bakery, "docker.raw") == []
    assert install_name(bakery, "docker.raw") == "docker.raw"
    (renamed,) = name_findings(bakery, "dock.raw")
    assert renamed.message.startswith("installed as dock.raw, it needs extension-release.dock")
    assert name_findings(info("/x/foo", "foo", {}, fmt="directory"), None) == []
    assert name_findings(info("/x/bar", "foo", {}, fmt="directory"), None)[0].fix.startswith(
        "ship it as foo ")


def test_misspelled_keys_other_types_keys_and_architectures() -> None:
    found = release_findings(info("/x/foo.raw", "foo", {
        "ID": "flatcar", "SYSEXT_LEVL": "1.0", "CONFEXT_LEVEL": "1", "MY_BUILD": "7",
        "ARCHITECTURE": "x86_64", "NAME": "Foo"}))
    by_code = {f.code: f for f in found}
    assert set(by_code) == {"unknown-key", "key-for-other-type", "unknown-architecture"}
    misspelled = [f for f in found if "SYSEXT_LEVL" in f.message][0]
    assert misspelled.severity == "error" and "did you mean SYSEXT_LEVEL?" in misspelled.message
    own = [f for f in found if "MY_BUILD" in f.message][0]
    assert own.severity == "warning"
    assert by_code["key-for-other-type"].fix == "use SYSEXT_LEVEL."
    assert by_code["unknown-architecture"].fix == "write ARCHITECTURE=x86-64."
    assert release_findings(info("/x/foo.raw", "foo", {"ARCHITECTURE": "x86-64"})) == []
    confext = info("/x/c.raw", "c", {"SYSEXT_LEVEL": "1"}, kind="confext")
    assert [f.fix for f in release_findings(confext)] == ["use CONFEXT_LEVEL."]


def test_host_findings_text_and_json() -> None:
    (found,) = host_findings(info("/x/foo.raw", "foo", {"ARCHITECTURE": "amd64"}))
    assert found.text().startswith("error: foo.raw: extension-release.foo sets "
                                   "ARCHITECTURE=amd64")
    assert found.as_json()["code"] == "unknown-architecture"


def test_units_nothing_starts_and_links_to_units_not_shipped(tmp_path: Path) -> None:
    from harness.extensions.inspect import inspect_image
    from harness.extensions.lint import unit_findings

    root = tmp_path / "app"
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / "usr/lib/extension-release.d/extension-release.app").write_text("ID=_any\n")
    units = root / "usr/lib/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "sockets.target.d").mkdir()
    install = "[Service]\nExecStart=/usr/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
    for name in ("linked.service", "forgotten.service", "sock.service", "tmpl@.service"):
        (units / name).write_text(install)
    (units / "sock.socket").write_text("[Socket]\nListenStream=1\n[Install]\n"
                                       "WantedBy=sockets.target\n")
    (units / "sockets.target.d/10-sock.conf").write_text("[Unit]\nUpholds=sock.socket\n")
    (units / "multi-user.target.wants/linked.service").symlink_to("../linked.service")
    (units / "multi-user.target.wants/tmpl@one.service").symlink_to("../tmpl@.service")
    (units / "multi-user.target.wants/elsewhere.service").symlink_to("../elsewhere.service")
    found = unit_findings(inspect_image(root))
    assert [(f.code, f.message.split(" ", 1)[0]) for f in found] == [
        ("unit-never-started", "forgotten.service"),
        ("link-to-missing-unit", "usr/lib/systemd/system/multi-user.target.wants/"
                                 "elsewhere.service")]
    assert "systemd does not run `systemctl enable` for an extension" in found[0].message
    assert found[0].fix.startswith("ship the link usr/lib/systemd/system/multi-user.target."
                                   "wants/forgotten.service -> ../forgotten.service")
    assert all(f.severity == "warning" for f in found)


def test_what_units_need_from_the_target() -> None:
    from harness.extensions.lint import unit_requirements

    image = ImageInfo(path=Path("/x/a.raw"), format="squashfs", type="sysext",
                      release_name="a", release={}, units=("a.service", "b.service"),
                      unit_texts=(
                          ("a.service", "[Service]\n# ExecStart=/commented\n"
                                        "ExecStart=@/usr/bin/a a --flag \\\n  --more\n"
                                        "ExecStartPost=%h/bin/x\nExecReload=kill -HUP $MAINPID\n"
                                        "EnvironmentFile=-/etc/maybe\nUser=svc\nGroup=declared\n"),
                          ("b.service", "[Service]\nDynamicUser=yes\nUser=dyn\nUser=1000\n")),
                      sysusers=("declared",))
    assert [(r.unit, r.key, r.kind, r.value) for r in unit_requirements(image)] == [
        ("a.service", "ExecStart", "executable", "/usr/bin/a"),
        ("a.service", "ExecReload", "command", "kill"),
        ("a.service", "User", "user", "svc")]
