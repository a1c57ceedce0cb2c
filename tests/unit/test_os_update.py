"""A/B OS updates: persona slot-B os-release, the image builder's two /usr slots, and the
`os_update` / `os_rollback` scenario steps (loader and runner; no VM)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import ConfigError, ConfigErrors, HarnessError
from harness.scenario import OsUpdateStep, RebootStep, load_scenario, run_scenario
from harness.targets import build, initramfs
from harness.targets.build import _os_release_text, target_digest
from harness.targets.model import usr_slots
from harness.targets.registry import all_targets, get_target, load_persona

# ------------------------------------------------------------------ personas, slot B


def test_slot_a_is_the_persona_os_release_plus_harness_fields() -> None:
    t = get_target("refos-257-flatcar")
    a = t.os_release
    assert a["VERSION_ID"] == "4081.2.0"
    assert a["SYSEXT_HARNESS_TARGET"] == "refos-257-flatcar"
    assert a["SYSEXT_HARNESS_SLOT"] == "A"
    assert t.slot_os_release("A") == a
    with pytest.raises(ValueError, match="slot"):
        t.slot_os_release("C")


def _changed(name: str) -> dict[str, tuple[str | None, str]]:
    t = get_target(name)
    a, b = t.os_release, t.os_release_b
    assert set(a) <= set(b)
    return {k: (a.get(k), v) for k, v in b.items() if a.get(k) != v}


def test_flatcar_slot_b_is_the_next_release() -> None:
    changed = _changed("refos-257-flatcar")
    assert changed.pop("VERSION") == ("4081.2.0", "4152.2.0")
    assert changed.pop("VERSION_ID") == ("4081.2.0", "4152.2.0")
    assert changed.pop("SYSEXT_HARNESS_SLOT") == ("A", "B")
    old_build, new_build = changed.pop("BUILD_ID")
    assert old_build != new_build and re.fullmatch(r"\d{4}-\d\d-\d\d-\d{4}", new_build)
    _, pretty = changed.pop("PRETTY_NAME")
    assert "4152.2.0" in pretty and pretty.endswith("[refos persona]")
    assert changed == {}
    b = get_target("refos-257-flatcar").os_release_b
    assert (b["ID"], b["SYSEXT_LEVEL"]) == ("flatcar", "1.0")  # the level survives


def test_fcos_slot_b_is_a_major_rebase() -> None:
    changed = _changed("refos-252-fcos")
    assert changed.pop("VERSION_ID") == ("42", "43")
    assert changed.pop("PLATFORM_ID") == ("platform:f42", "platform:f43")
    assert changed.pop("CPE_NAME") == ("cpe:/o:fedoraproject:fedora:42",
                                       "cpe:/o:fedoraproject:fedora:43")
    assert changed.pop("VERSION")[1].startswith("43.")
    assert changed.pop("OSTREE_VERSION")[1].startswith("43.")
    assert changed.pop("PRETTY_NAME")[1].endswith("[refos persona]")
    assert changed.pop("SYSEXT_HARNESS_SLOT") == ("A", "B")
    assert changed == {}
    b = get_target("refos-252-fcos").os_release_b
    assert (b["ID"], b["VARIANT_ID"]) == ("fedora", "coreos")
    assert "SYSEXT_LEVEL" not in b


def test_kairos_slot_b_is_the_next_kairos_release_on_the_same_flavor() -> None:
    changed = _changed("refos-257-kairos")
    assert changed.pop("KAIROS_VERSION") == ("v3.2.1", "v3.2.2")
    assert "v3.2.2" in changed.pop("PRETTY_NAME")[1]
    assert changed.pop("SYSEXT_HARNESS_SLOT") == ("A", "B")
    assert changed == {}  # ID and VERSION_ID of the Ubuntu flavor stay


def test_every_target_has_a_different_slot_b() -> None:
    for t in all_targets():
        assert t.os_release_b["SYSEXT_HARNESS_TARGET"] == t.name
        assert t.os_release_b["PRETTY_NAME"].endswith("[refos persona]")
        assert t.os_release_b != t.os_release


def test_only_flatcar_relinks_per_version() -> None:
    assert {t.persona.name for t in all_targets() if t.persona.relink_per_version} == {
        "flatcar"}


def _persona_yaml(tmp_path: Path, update: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent("""\
        name: p
        title: P
        default_user: core
        extension_dir: /etc/extensions
        os_release: {ID: p, VERSION_ID: "1"}
    """) + textwrap.dedent(update))
    return path


def test_persona_update_block_is_validated(tmp_path: Path) -> None:
    ok = load_persona(_persona_yaml(tmp_path, """\
        update:
          os_release: {VERSION_ID: 2}
    """))
    assert ok.update_os_release == {"VERSION_ID": "2"}
    assert ok.relink_per_version is False
    assert load_persona(_persona_yaml(tmp_path, "")).update_os_release == {}
    for bad, key in [
        ("update: {os_relase: {}}\n", "update.os_relase"),
        ("update: [1]\n", "update"),
        ("update: {os_release: [VERSION_ID]}\n", "update.os_release"),
        ("update: {os_release: {SYSEXT_HARNESS_SLOT: B}}\n",
         "update.os_release.SYSEXT_HARNESS_SLOT"),
        ("update: {relink_per_version: yes please}\n", "update.relink_per_version"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_persona(_persona_yaml(tmp_path, bad))
        assert err.value.key == key


# ------------------------------------------------------------------------- builder


def test_usr_slots_per_persona() -> None:
    for name, version_b in [("refos-257-flatcar", "4152.2.0"), ("refos-257-fcos", "43"),
                            ("refos-257-kairos", "24.04")]:
        t = get_target(name)
        a, b = usr_slots(t)
        assert (a.slot, a.label, a.filename) == ("A", "USR-A", "usr-a.img")
        assert (b.slot, b.label, b.filename) == ("B", "USR-B", "usr-b.img")
        assert a.os_release == t.os_release and b.os_release == t.os_release_b
        text = _os_release_text(b.os_release)
        assert f"VERSION_ID={version_b}\n" in text
        assert "SYSEXT_HARNESS_SLOT=B\n" in text
        assert f"SYSEXT_HARNESS_TARGET={name}\n" in text


def test_target_digest_covers_slot_b() -> None:
    t = get_target("refos-257-kairos")
    persona = replace(t.persona, update_os_release={
        **t.persona.update_os_release, "KAIROS_VERSION": "v9.9.9"})
    assert target_digest(replace(t, persona=persona)) != target_digest(t)


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    """A tiny stand-in for a customized base root."""
    tree = tmp_path / "roots" / "base"
    for d in ("usr/lib", "usr/bin", "etc/sysext-harness", "var/lib", "opt", "boot"):
        (tree / d).mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text("PRETTY_NAME=Debian\nID=debian\n")
    (tree / "usr/bin/true").write_text("")
    for f in ("passwd", "shadow", "group", "gshadow"):
        (tree / "etc" / f).write_text("root:x:0:0::/root:/bin/sh\n")
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_text("k")
    (tree / "boot/initrd.img-6.1.0-1-amd64").write_text("i")
    modules = tree / "usr/lib/modules/6.1.0-1-amd64"
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("".join(
        f"kernel/{name}.ko:\n" for name in initramfs.EARLY_MODULES))
    for name in initramfs.EARLY_MODULES:
        (modules / "kernel").mkdir(exist_ok=True)
        (modules / f"kernel/{name}.ko").write_text(name)
    return tree


def test_builder_writes_each_slot_for_one_mkfs_and_restores(
    tmp_path: Path, fake_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slot A and B images get their own os-release and built-ins, built for that slot;
    the shared base tree is exactly as before afterwards."""
    seen: dict[str, dict[str, object]] = {}
    built_for: list[str] = []
    usr = fake_tree / "usr"
    before = sorted(p.relative_to(usr).as_posix() for p in usr.rglob("*"))

    def fake_run(argv, **kwargs):  # type: ignore[no-untyped-def]
        argv = [str(a) for a in argv]
        if argv[0] == "mkfs.ext4":
            label, source, image = argv[argv.index("-L") + 1], Path(argv[-3]), Path(argv[-2])
            image.write_text(label)
            if label == "REFOS-ROOT":
                flags = sorted(p.name for p in (source / "etc/sysext-harness").iterdir())
                seen[label] = {"flags": flags}
                return subprocess.CompletedProcess(argv, 0, b"", b"")
            builtin = source / "share/flatcar/sysext/refos-builtin.raw"
            seen[label] = {
                "source": source,
                "os_release": (source / "lib/os-release").read_text(),
                "builtin": builtin.read_text() if builtin.exists() else None,
            }
        elif argv[0] == "cp":
            src, dest = Path(argv[-2]), Path(argv[-1])
            if src.is_dir():
                shutil.copytree(src, dest, symlinks=True)
            else:
                shutil.copy2(src, dest)
        else:  # pragma: no cover
            raise AssertionError(argv)
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    def fake_build_extension(spec, os_release, **kwargs):  # type: ignore[no-untyped-def]
        from harness.extensions.model import Artifact

        built_for.append(os_release["VERSION_ID"])
        path = tmp_path / "ext" / os_release["VERSION_ID"] / f"{spec.name}.raw"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{spec.name} for {os_release['VERSION_ID']}")
        return Artifact(name=spec.name, path=path, format="squashfs", digest="0")

    monkeypatch.setattr(build, "run", fake_run)
    monkeypatch.setattr(build.os, "chown", lambda *a, **k: None)
    busybox = tmp_path / "busybox"
    busybox.write_text("static busybox")
    monkeypatch.setattr(initramfs, "find_busybox", lambda: busybox)
    monkeypatch.setattr("harness.extensions.build.build_extension", fake_build_extension)
    monkeypatch.setenv("SYSEXT_HARNESS_CACHE", str(tmp_path / "cache"))

    t = get_target("refos-257-flatcar")
    dest = tmp_path / "images" / f"{t.name}-0123456789abcdef"
    build._build_target_image(t, fake_tree, dest, "digest", lambda m: None)

    assert seen["USR-A"]["source"] == usr == seen["USR-B"]["source"]
    assert "VERSION_ID=4081.2.0\n" in seen["USR-A"]["os_release"]  # type: ignore[operator]
    assert "SYSEXT_HARNESS_SLOT=A\n" in seen["USR-A"]["os_release"]  # type: ignore[operator]
    assert "VERSION_ID=4152.2.0\n" in seen["USR-B"]["os_release"]  # type: ignore[operator]
    assert "SYSEXT_HARNESS_SLOT=B\n" in seen["USR-B"]["os_release"]  # type: ignore[operator]
    # OS-bound built-ins: built for each slot's VERSION_ID
    assert built_for == ["4081.2.0", "4152.2.0"]
    assert seen["USR-A"]["builtin"] == "refos-builtin for 4081.2.0"
    assert seen["USR-B"]["builtin"] == "refos-builtin for 4152.2.0"
    # the shared tree is back as it was
    assert (usr / "lib/os-release").read_text() == "PRETTY_NAME=Debian\nID=debian\n"
    assert sorted(p.relative_to(usr).as_posix() for p in usr.rglob("*")) == before
    # images, manifest and the persona's flags in the root
    assert (dest / "usr-a.img").read_text() == "USR-A"
    assert (dest / "usr-b.img").read_text() == "USR-B"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["os_release_b"]["VERSION_ID"] == "4152.2.0"
    assert manifest["usr_slots"]["B"] == {"label": "USR-B", "image": "usr-b.img"}
    assert "flatcar-relink-enabled" in seen["REFOS-ROOT"]["flags"]  # type: ignore[operator]


def test_builder_restores_the_tree_when_mkfs_fails(
    tmp_path: Path, fake_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(argv, **kwargs):  # type: ignore[no-untyped-def]
        argv = [str(a) for a in argv]
        if argv[0] == "cp":
            src, dest = Path(argv[-2]), Path(argv[-1])
            if src.is_dir():
                shutil.copytree(src, dest, symlinks=True)
            else:
                shutil.copy2(src, dest)
            return subprocess.CompletedProcess(argv, 0, b"", b"")
        if "USR-B" in argv:
            raise HarnessError("mkfs failed")
        Path(argv[-2]).write_text("x")
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    def fake_build_extension(spec, os_release, **kwargs):  # type: ignore[no-untyped-def]
        from harness.extensions.model import Artifact

        path = tmp_path / "ext" / os_release["VERSION_ID"] / f"{spec.name}.raw"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        return Artifact(name=spec.name, path=path, format="squashfs", digest="0")

    monkeypatch.setattr(build, "run", fake_run)
    monkeypatch.setattr(build.os, "chown", lambda *a, **k: None)
    monkeypatch.setattr("harness.extensions.build.build_extension", fake_build_extension)
    usr = fake_tree / "usr"
    before = sorted(p.relative_to(usr).as_posix() for p in usr.rglob("*"))
    t = get_target("refos-257-flatcar")  # with a built-in extension in /usr
    with pytest.raises(HarnessError, match="mkfs failed"):
        build._build_target_image(t, fake_tree, tmp_path / "img" / "x", "d", lambda m: None)
    assert (usr / "lib/os-release").read_text() == "PRETTY_NAME=Debian\nID=debian\n"
    assert sorted(p.relative_to(usr).as_posix() for p in usr.rglob("*")) == before


def test_persona_flags_in_the_root(tmp_path: Path, fake_tree: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.os, "chown", lambda *a, **k: None)
    for persona, relink in (("flatcar", True), ("fcos", False), ("kairos", False)):
        rootfs = tmp_path / persona
        shutil.copytree(fake_tree / "etc", rootfs / "etc")
        build._apply_persona(rootfs, get_target(f"refos-257-{persona}"))
        flag = rootfs / "etc/sysext-harness/flatcar-relink-enabled"
        assert flag.exists() is relink
        assert (rootfs / "etc/sysext-harness/slot").read_text() == "A\n"


# ---------------------------------------------------------------------- scenarios


def _load(tmp_path: Path, steps: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "s.yaml"
    path.write_text("description: d\nsteps:\n" + textwrap.indent(textwrap.dedent(steps), "  "))
    return load_scenario(path)


def test_loader_accepts_os_update_and_rollback(tmp_path: Path) -> None:
    s = _load(tmp_path, """\
        - os_update
        - os_rollback
        - os_update:
          name: to 4152
          when: {personas: [flatcar]}
        - os_rollback:
          timeout: 30
        - reboot
    """)
    a, b, c, d, e = s.steps
    assert isinstance(a, OsUpdateStep) and (a.action, a.slot) == ("os_update", "B")
    assert isinstance(b, OsUpdateStep) and (b.action, b.slot) == ("os_rollback", "A")
    assert c.name == "to 4152" and c.when is not None and c.when.personas == ("flatcar",)
    assert isinstance(d, OsUpdateStep) and d.timeout == 30
    assert isinstance(e, RebootStep)
    assert a.command == "/usr/lib/sysext-harness/switch-usr-slot B"
    assert b.command == "/usr/lib/sysext-harness/switch-usr-slot A"
    assert a.label == "step 1 (os_update (boot /usr slot B))"


@pytest.mark.parametrize(("steps", "key", "fragment"), [
    ("- os_update: B\n", "steps[0].os_update", "no argument"),
    ("- os_rollback: {slot: A}\n", "steps[0].os_rollback", "no argument"),
    ("- os_update:\n  expect: {merged: []}\n", "steps[0].expect", "no expect block"),
    ("- os_update:\n  slot: B\n", "steps[0].slot", "unknown key"),
    ("- os_update:\n  when: {personas: [flatcr]}\n", "steps[0].when.personas[0]",
     "unknown persona"),
    ("- {os_update: null, reboot: null}\n", "steps[0]", "2 actions"),
    ("- os-update\n", "steps[0]", "unknown step"),
])
def test_loader_refuses_bad_os_update_steps(tmp_path: Path, steps: str, key: str,
                                            fragment: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        _load(tmp_path, steps)
    errors = info.value.errors
    assert [e.key for e in errors] == [key]
    assert fragment in errors[0].render()


@dataclass
class Result:
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


@dataclass
class SlotMachine:
    """A fake guest that keeps a /usr slot: the switch sets the next one, reboot boots it."""

    name: str = "fake"
    slot: str = "A"
    next_slot: str = "A"
    boots_into_next: bool = True
    switch_fails: bool = False
    events: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    shutdowns: list[str] = field(default_factory=list)

    def execute(self, command: str, timeout: float = 120) -> Result:
        self.events.append(f"exec {command}")
        m = re.fullmatch(r"/usr/lib/sysext-harness/switch-usr-slot ([AB])", command)
        if m:
            if self.switch_fails:
                return Result(1, "", "switch-usr-slot: no /usr entry in /etc/fstab\n")
            self.next_slot = m.group(1)
            return Result(0, f"switch-usr-slot: slot {self.next_slot} from the next boot\n")
        if command == "/usr/lib/sysext-harness/switch-usr-slot --current":
            return Result(0, self.slot + "\n")
        return Result()

    def succeed(self, command: str, timeout: float = 120) -> str:
        res = self.execute(command, timeout)
        assert res.exit_code == 0
        return res.stdout

    def copy_to(self, local: Path, remote: str) -> None:
        self.events.append(f"copy {remote}")

    def reboot(self, timeout: float | None = None, *, shutdown: str = "clean") -> None:
        self.shutdowns.append(shutdown)
        self.events.append("reboot")
        if self.boots_into_next:
            self.slot = self.next_slot

    def log(self, message: str) -> None:
        self.messages.append(message)

    @contextlib.contextmanager
    def nested(self, title: str) -> Iterator[None]:
        self.log(title)
        yield


def _target():  # type: ignore[no-untyped-def]
    return SimpleNamespace(name="refos-257-flatcar", systemd_version=257,
                           persona=SimpleNamespace(name="flatcar"),
                           default_extension_dir="/etc/extensions")


def test_a_clean_shutdown_is_asked_for_per_step(tmp_path: Path) -> None:
    s = _load(tmp_path, """\
        - os_update:
          shutdown: clean
        - os_rollback
    """)
    m = SlotMachine()
    run_scenario(s, m, _target(), {}, log_path=tmp_path / "steps.log")
    assert m.shutdowns == ["clean", "reset"]


def test_runner_switches_the_slot_then_reboots(tmp_path: Path) -> None:
    s = _load(tmp_path, """\
        - os_update
        - run: "true"
        - os_rollback
    """)
    m = SlotMachine()
    log = tmp_path / "steps.log"
    run_scenario(s, m, _target(), {}, log_path=log)
    assert m.events == [
        "exec /usr/lib/sysext-harness/switch-usr-slot B",
        "reboot",
        "exec /usr/lib/sysext-harness/switch-usr-slot --current",
        "exec true",
        "exec /usr/lib/sysext-harness/switch-usr-slot A",
        "reboot",
        "exec /usr/lib/sysext-harness/switch-usr-slot --current",
    ]
    assert m.slot == "A"
    text = log.read_text()
    assert "(reboot into /usr slot B, shutdown: reset)" in text
    assert "(reboot into /usr slot A, shutdown: reset)" in text
    assert any("os_update: switching /usr to slot B" in msg for msg in m.messages)
    assert any("os_rollback: running /usr slot A" in msg for msg in m.messages)


def test_runner_os_update_skipped_by_when(tmp_path: Path) -> None:
    s = _load(tmp_path, """\
        - os_update:
          when: {personas: [fcos]}
    """)
    m = SlotMachine()
    run_scenario(s, m, _target(), {})
    assert m.events == []


def test_a_failed_switch_is_a_harness_error_and_does_not_reboot(tmp_path: Path) -> None:
    s = _load(tmp_path, "- os_update\n")
    m = SlotMachine(switch_fails=True)
    with pytest.raises(HarnessError, match="set-up command failed") as err:
        run_scenario(s, m, _target(), {})
    assert "no /usr entry" in str(err.value)
    assert "reboot" not in m.events


def test_coming_up_on_the_old_slot_is_a_harness_error(tmp_path: Path) -> None:
    s = _load(tmp_path, "- os_update\n- run: 'true'\n")
    m = SlotMachine(boots_into_next=False)
    with pytest.raises(HarnessError, match="did not come up on /usr slot B"):
        run_scenario(s, m, _target(), {})
    assert "exec true" not in m.events
