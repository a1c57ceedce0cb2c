"""`sysext-harness check` end to end: real images, a real VM, the guest's own verdict.

The images are what extension authors ship (squashfs, versioned file name, units enabled
through drop-ins, as sysext-bakery does); one is good, one has the bug sysext-bakery#247
shipped: an ExecStart= pointing at a binary the image does not contain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from authored_images import unit_extension

from harness.extensions.ddi import build_ddi
from harness.extensions.signing import generate_key_pair
from harness.extensions.spec import parse_extension_spec
from harness.paths import project_root
from harness.targets.registry import get_target

pytestmark = pytest.mark.vm
TARGET = "refos-257-flatcar"
CLI = [sys.executable, "-m", "harness.cli", "check"]


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--target", TARGET], capture_output=True, text=True,
                          cwd=project_root(), timeout=900)


def test_good_image_passes_every_check(tmp_path: Path) -> None:
    raw = unit_extension(tmp_path, "greeter", "/usr/bin/greeter", "Upholds=greeter.service")
    script = tmp_path / "test.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\n[[ $(greeter) == 'hello from greeter' ]]\n")
    res = check(str(raw), "--as", "greeter.raw", "--unit", "greeter.service", "--run",
                "greeter", "--test", str(script), "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "extension-release.greeter [ID=flatcar SYSEXT_LEVEL=1.0]" in res.stdout
    scenario = tmp_path / "art/check/scenarios/check-greeter.yaml"
    assert scenario.exists() and "as: greeter.raw" in scenario.read_text()
    matrix = json.loads((tmp_path / "art/latest/matrix.json").read_text())
    assert {s: {t: c["outcome"] for t, c in row.items()}
            for s, row in matrix["results"].items()} == {"check-greeter": {TARGET: "pass"}}


def test_unit_that_fails_at_boot_fails_the_check(tmp_path: Path) -> None:
    raw = unit_extension(tmp_path, "broken", "/usr/bin/false", "Wants=broken.service")
    res = check(str(raw), "--as", "broken.raw", "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert "no unit failed that had not failed before the extension" in res.stdout
    assert "failed units:" in res.stdout and "broken.service" in res.stdout


def test_signed_ddi_merges_once_its_certificate_is_trusted(tmp_path: Path) -> None:
    pair = generate_key_pair(tmp_path / "keys")
    spec = parse_extension_spec("signedtool", {
        "format": "erofs", "release": {"ID": "_any"},
        "files": [{"path": "/usr/bin/signedtool", "content": "#!/bin/sh\necho signed\n",
                   "mode": "0755"}]}, source="test", key_prefix="extensions.signedtool")
    ddi = build_ddi(spec, {}, key_pair=pair, mode="signed", cache_dir=tmp_path / "cache")
    res = check(str(ddi.path), "--as", "signedtool.raw", "--trust", str(pair.certificate),
                "--run", "signedtool", "--no-reboot", "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "sysext ddi (root partition, signed verity)" in res.stdout


def test_a_file_name_that_does_not_match_its_release_file_fails_before_booting(
        tmp_path: Path) -> None:
    raw = unit_extension(tmp_path, "greeter", "/usr/bin/greeter", "Upholds=greeter.service",
                         file_name="other.raw")
    res = check(str(raw), "--artifacts", str(tmp_path / "art"), "--json",
                str(tmp_path / "findings.json"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert ("shipped as other.raw, it needs extension-release.other, but it holds "
            "extension-release.greeter") in res.stderr
    assert "--as greeter.raw" in res.stderr and "nothing was booted" in res.stderr
    assert not (tmp_path / "art").exists()
    found = json.loads((tmp_path / "findings.json").read_text())["findings"]
    assert [f["code"] for f in found] == ["name-mismatch"]


LIBRARY = "int greeting(void) { return 42; }\n"
PROGRAM = ('#include <stdio.h>\nint {f}(void);\n'
           'int main(void) {{ printf("%d\\n", {f}()); return 0; }}\n')


def test_every_elf_file_must_find_its_libraries_on_the_target(tmp_path: Path) -> None:
    """greet's library is in the image (found through its RUNPATH); lonely's is on the
    build machine only, so on the target it is `not found`."""
    root = tmp_path / "tree"
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / "usr/lib/extension-release.d/extension-release.greet").write_text("ID=_any\n")
    build = tmp_path / "build"
    build.mkdir()
    (build / "greeting.c").write_text(LIBRARY)
    (build / "greet.c").write_text(PROGRAM.format(f="greeting"))
    (build / "lonely.c").write_text(PROGRAM.format(f="greeting"))
    (root / "usr/lib/greet").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    gcc = ["gcc", "-O2", "-o"]
    subprocess.run([*gcc, root / "usr/lib/greet/libgreeting.so.1", "-shared", "-fPIC",
                    "-Wl,-soname,libgreeting.so.1", build / "greeting.c"], check=True)
    (build / "libgreeting.so").symlink_to(root / "usr/lib/greet/libgreeting.so.1")
    subprocess.run([*gcc, root / "usr/bin/greet", build / "greet.c", f"-L{build}",
                    "-lgreeting", "-Wl,-rpath,/usr/lib/greet"], check=True)
    (build / "elsewhere").mkdir()
    subprocess.run([*gcc, build / "elsewhere/libgreeting.so.1", "-shared", "-fPIC",
                    "-Wl,-soname,liblonely.so.1", build / "greeting.c"], check=True)
    (build / "elsewhere/liblonely.so").symlink_to("libgreeting.so.1")
    subprocess.run([*gcc, root / "usr/bin/lonely", build / "lonely.c",
                    f"-L{build / 'elsewhere'}", "-llonely"], check=True)
    raw = tmp_path / "greet.raw"
    subprocess.run(["mksquashfs", root, raw, "-quiet", "-no-progress", "-all-root"],
                   check=True)
    res = check(str(raw), "--no-reboot", "--run", "greet", "--artifacts",
                str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert "/usr/bin/lonely needs liblonely.so.1 => not found" in res.stdout
    assert "/usr/bin/greet needs" not in res.stdout
    assert "3 ELF file(s) read" in res.stdout


def _release_only(tmp_path: Path, name: str, release: str) -> Path:
    root = tmp_path / f"tree-{name}"
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / f"usr/lib/extension-release.d/extension-release.{name}").write_text(release)
    (root / f"usr/share/{name}").mkdir(parents=True)
    (root / f"usr/share/{name}/marker").write_text("x\n")
    raw = tmp_path / f"{name}.raw"
    subprocess.run(["mksquashfs", root, raw, "-quiet", "-no-progress", "-all-root"],
                   check=True)
    return raw


def test_the_next_os_update_drops_a_pinned_image_and_keeps_a_level_one(tmp_path: Path) -> None:
    """refos-257-flatcar's next release (slot B) has another VERSION_ID and the same
    SYSEXT_LEVEL: the check says the pinned image goes and the leveled one stays."""
    version = get_target(TARGET).os_release["VERSION_ID"]
    pinned = _release_only(tmp_path, "pinned", f"ID=flatcar\nVERSION_ID={version}\n")
    level = _release_only(tmp_path, "level", "ID=flatcar\nSYSEXT_LEVEL=1.0\n")
    res = check(str(pinned), str(level), "--artifacts", str(tmp_path / "art"), "--strict")
    out = res.stdout + res.stderr
    assert (f"warning: {TARGET}: next OS update: pinned.raw is dropped, as its release file "
            f"says (it pins VERSION_ID={version}, the new OS has VERSION_ID=") in out, out[-4000:]
    assert (f"note: {TARGET}: next OS update: level.raw is still merged (its SYSEXT_LEVEL 1.0 "
            "is the new OS's)") in out
    assert res.returncode == 1 and "--strict: 1 warning(s) fail the check" in out  # the drop


def test_what_units_need_must_exist_on_the_target(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / "usr/lib/extension-release.d/extension-release.needy").write_text("ID=_any\n")
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "usr/lib/sysusers.d/needy.conf").write_text("g needygrp -\n")
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "needy.service").write_text(
        "[Service]\nExecStartPre=-/usr/bin/true\nExecStart=/usr/sbin/needy-daemon --now\n"
        "ExecStop=needy-stop\nEnvironmentFile=/etc/needy.env\nEnvironmentFile=-/etc/opt.env\n"
        "User=needy\nGroup=needygrp\n")
    raw = tmp_path / "needy.raw"
    subprocess.run(["mksquashfs", root, raw, "-quiet", "-no-progress", "-all-root"],
                   check=True)
    res = check(str(raw), "--no-reboot", "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    for line in ("needy.service: ExecStart=/usr/sbin/needy-daemon: no executable "
                 "/usr/sbin/needy-daemon in the image or on this target",
                 "needy.service: ExecStop=needy-stop: no command needy-stop in systemd's "
                 "search path",
                 "needy.service: EnvironmentFile=/etc/needy.env: no file /etc/needy.env on this "
                 "target (write EnvironmentFile=-/etc/needy.env if it may be missing)",
                 "needy.service: User=needy: no user needy on this target"):
        assert line in res.stdout, (line, res.stdout[-4000:])
    assert "ExecStartPre=/usr/bin/true" not in res.stdout and "needygrp" not in res.stdout
    assert "5 requirement(s) of the units checked" in res.stdout


def test_an_image_the_target_kernel_cannot_read_fails_with_the_kernels_words(
        tmp_path: Path) -> None:
    """Linux's squashfs never read the legacy lzma compression (only xz): mksquashfs still
    writes it."""
    root = tmp_path / "tree"
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / "usr/lib/extension-release.d/extension-release.old").write_text("ID=_any\n")
    raw = tmp_path / "old.raw"
    subprocess.run(["mksquashfs", root, raw, "-quiet", "-no-progress", "-all-root",
                    "-comp", "lzma"], check=True)
    res = check(str(raw), "--no-reboot", "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert "the kernel of this target cannot read" in res.stdout
    assert "(squashfs, lzma compression)" in res.stdout
    assert 'Filesystem uses "lzma" compression. This is not supported' in res.stdout


def test_release_and_unit_mistakes_in_an_erofs_image(tmp_path: Path) -> None:
    """Built with mkfs.erofs: a misspelled key is an error before anything boots; fixed,
    the unit nothing starts is a warning, which --strict turns into a failure after the
    target ran."""
    def erofs(release: str) -> Path:
        root = tmp_path / "tree"
        shutil.rmtree(root, ignore_errors=True)
        (root / "usr/lib/extension-release.d").mkdir(parents=True)
        (root / "usr/lib/extension-release.d/extension-release.forgot").write_text(release)
        units = root / "usr/lib/systemd/system"
        units.mkdir(parents=True)
        (units / "forgot.service").write_text(
            "[Service]\nExecStart=/usr/bin/true\n[Install]\nWantedBy=multi-user.target\n")
        raw = tmp_path / "forgot.raw"
        raw.unlink(missing_ok=True)
        subprocess.run(["mkfs.erofs", raw, root], check=True, capture_output=True)
        return raw

    res = check(str(erofs("ID=_any\nSYSEXT_LEVL=1.0\n")), "--artifacts",
                str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert "sysext erofs" in res.stdout
    assert ("error: forgot.raw: extension-release.forgot sets SYSEXT_LEVL, which systemd "
            "does not know (did you mean SYSEXT_LEVEL?)") in res.stderr
    assert not (tmp_path / "art").exists()

    json_out = tmp_path / "check.json"
    res = check(str(erofs("ID=_any\nSYSEXT_LEVEL=1.0\n")), "--no-reboot", "--strict",
                "--json", str(json_out), "--artifacts", str(tmp_path / "art"))
    assert res.returncode == 1, res.stdout[-4000:] + res.stderr[-2000:]
    assert ("warning: forgot.raw: forgot.service says WantedBy=multi-user.target in "
            "[Install], but nothing in the image starts it") in res.stderr
    assert "--strict: 1 warning(s) fail the check" in res.stderr
    report = json.loads(json_out.read_text())
    assert [f["code"] for f in report["findings"]] == ["unit-never-started"]
    assert report["targets"] == {TARGET: {"outcome": "pass", "detail": ""}}
