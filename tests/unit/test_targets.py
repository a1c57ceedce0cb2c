"""Target registry, version constraints and os-release rendering (pure logic)."""

from __future__ import annotations

import pytest

from harness import versions
from harness.errors import ConfigError
from harness.targets.build import _os_release_text, base_digest, target_digest
from harness.targets.registry import all_targets, get_target, select_targets


def test_every_version_has_every_persona() -> None:
    names = {t.name for t in all_targets()}
    for version in (252, 257):
        for persona in ("flatcar", "fcos", "kairos"):
            assert f"refos-{version}-{persona}" in names


def test_persona_identity() -> None:
    flatcar = get_target("refos-257-flatcar").os_release
    assert (flatcar["ID"], flatcar["ID_LIKE"], flatcar["SYSEXT_LEVEL"]) == (
        "flatcar", "coreos", "1.0")
    fcos = get_target("refos-252-fcos").os_release
    assert (fcos["ID"], fcos["VERSION_ID"], fcos["VARIANT_ID"]) == ("fedora", "42", "coreos")
    assert "SYSEXT_LEVEL" not in fcos
    assert get_target("refos-257-kairos").persona.default_user == "kairos"
    assert get_target("refos-257-kairos").os_release["SYSEXT_HARNESS_TARGET"] == (
        "refos-257-kairos")


def test_select_targets_globs_and_commas() -> None:
    assert [t.name for t in select_targets(["refos-257-flatcar,refos-252-*"])] == [
        "refos-257-flatcar", "refos-252-fcos", "refos-252-flatcar", "refos-252-kairos"]
    assert len(select_targets(None)) == len([t for t in all_targets() if t.default])
    with pytest.raises(ConfigError, match="no target matches") as err:
        select_targets(["refos-1-*"])
    assert "refos-257-flatcar" in str(err.value)


def test_digests_separate_targets_of_one_base() -> None:
    a, b = get_target("refos-257-flatcar"), get_target("refos-257-fcos")
    assert base_digest(a.base) == base_digest(b.base)
    assert target_digest(a) != target_digest(b)
    assert base_digest(a.base) != base_digest(get_target("refos-252-flatcar").base)


def test_os_release_quoting() -> None:
    text = _os_release_text({"ID": "flatcar", "NAME": 'A "quoted" $name', "EMPTY": ""})
    assert "ID=flatcar\n" in text
    assert 'NAME="A \\"quoted\\" \\$name"' in text
    assert 'EMPTY=""' in text


@pytest.mark.parametrize(("constraint", "version", "expected"), [
    ("257", 257, True), (">=254", 252, False), (">=254,<257", 256, True),
    ("<=255", 257, False), (252, 252, True), ("!=252", 257, True),
])
def test_version_constraints(constraint, version, expected) -> None:  # type: ignore[no-untyped-def]
    assert versions.matches(constraint, version) is expected


def test_bad_constraints_are_recognised() -> None:
    assert not versions.is_valid_constraint(">= abc")
    assert not versions.is_valid_constraint("")
    assert versions.is_valid_constraint(">=254,<257")


def test_kairos_persona_ships_its_verity_dropin_from_254() -> None:
    persona = get_target("refos-257-kairos").persona
    [(path, content, constraint)] = persona.files
    assert path == "/etc/systemd/system/systemd-sysext.service.d/kairos-sysext.conf"
    assert '--image-policy="root=verity+absent:usr=verity+absent"' in content
    assert constraint == ">=254"
    assert not versions.matches(constraint, 252)
    assert get_target("refos-257-fcos").persona.files == ()


def test_flatcar_persona_ships_ensure_sysext() -> None:
    files = {path: content for path, content, _ in get_target("refos-252-flatcar").persona.files}
    unit = files["/etc/systemd/system/ensure-sysext.service"]
    assert "BindsTo=systemd-sysext.service" in unit and "After=systemd-sysext.service" in unit
    assert "restart --no-block sockets.target timers.target multi-user.target" in unit
    assert "Wants=ensure-sysext.service" in files[
        "/etc/systemd/system/sysinit.target.d/ensure-sysext.conf"]


@pytest.mark.parametrize(("files", "key"), [
    ("files: {a: b}", "files"),
    ("files: [{path: /usr/lib/x, content: y}]", "files[0].path"),
    ("files: [{path: etc/x, content: y}]", "files[0].path"),
    ("files: [{path: /etc/x, content: y, systemd: 'newer'}]", "files[0].systemd"),
    ("files: [{path: /etc/x}]", "files[0]"),
])
def test_persona_files_are_validated(tmp_path, files: str, key: str) -> None:  # type: ignore[no-untyped-def]
    from harness.targets.registry import load_persona

    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntitle: P\ndefault_user: u\nextension_dir: /var/lib/extensions\n"
                    "os_release: {ID: p}\n" + files + "\n")
    with pytest.raises(ConfigError) as err:
        load_persona(path)
    assert err.value.key == key
