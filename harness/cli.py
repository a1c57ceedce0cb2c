"""Command line: ``sysext-harness targets | images build | images export | sysext build |
config render | validate | docs | check | shell | test``.

Bad input exits 2 with a message naming the file, key and value; failures of real work
exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError
from harness.machine.capacity import parse_jobs, xdist_args
from harness.machine.vcpus import parse_vcpus


def _cmd_targets(args: argparse.Namespace) -> int:
    from harness.paths import cache_dir
    from harness.targets.build import target_digest
    from harness.targets.registry import all_targets

    rows = []
    for t in all_targets():
        built = (cache_dir() / "images" / f"{t.name}-{target_digest(t)[:16]}"
                 / "manifest.json").exists()
        rows.append({"name": t.name, "systemd": t.systemd_version, "persona": t.persona.name,
                     "os": f"{t.persona.os_release.get('ID')} "
                           f"{t.persona.os_release.get('VERSION_ID', '')}".strip(),
                     "base": f"debian {t.base.name}", "default": t.default, "built": built})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'TARGET':<20} {'SYSTEMD':<8} {'PERSONA':<8} {'OS-RELEASE':<18} {'BASE':<26} BUILT")
    for r in rows:
        print(f"{r['name']:<20} {r['systemd']:<8} {r['persona']:<8} {r['os']:<18} "
              f"{r['base']:<26} {'yes' if r['built'] else 'no'}")
    return 0


def _cmd_images_build(args: argparse.Namespace) -> int:
    from harness.targets.build import ensure_target_image
    from harness.targets.registry import select_targets

    targets = select_targets(args.targets or None)
    started = time.monotonic()
    for target in targets:
        t0 = time.monotonic()
        image = ensure_target_image(target)
        print(f"{target.name}: {image.directory} ({time.monotonic() - t0:.1f} s)")
    print(f"{len(targets)} target(s) ready in {time.monotonic() - started:.1f} s")
    return 0


def _cmd_images_export(args: argparse.Namespace) -> int:
    from harness.run import run
    from harness.targets.export import check_exportable, export_disk
    from harness.targets.registry import get_target

    target = get_target(args.target)
    check_exportable(target, args.firmware)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise ConfigError("the output's directory does not exist", key="-o",
                          value=str(out))
    if out.is_dir():
        raise ConfigError("is a directory; give the disk's file name", key="-o",
                          value=str(out))
    started = time.monotonic()
    disk = export_disk(target, args.firmware)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        run(["cp", "--reflink=auto", "--sparse=always", disk, tmp])
        tmp.chmod(0o644)  # the cached copy is read-only; the user's is theirs to boot
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{out} ({args.firmware}, from {disk}, {time.monotonic() - started:.1f} s)")
    return 0


def _cmd_sysext_build(args: argparse.Namespace) -> int:
    from harness.extensions.build import build_extension
    from harness.extensions.spec import load_extension_spec_file
    from harness.paths import cache_dir
    from harness.targets.registry import get_target

    spec = load_extension_spec_file(Path(args.spec))
    target = get_target(args.target)
    artifact = build_extension(spec, target.os_release, architecture=target.architecture,
                               cache_dir=cache_dir(), target_label=target.name)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / artifact.filename
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    if artifact.path.is_dir():
        shutil.copytree(artifact.path, dest, symlinks=True)
    else:
        shutil.copy2(artifact.path, dest)
    print(dest)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from harness.scenario import load_scenario, scenario_files

    paths: list[Path] = []
    for p in args.paths or ["scenarios"]:
        path = Path(p)
        paths.extend(scenario_files(path) if path.is_dir() else [path])
    errors: list[str] = []
    for path in paths:
        try:
            load_scenario(path)
        except ConfigError as exc:
            errors.append(str(exc))
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{len(paths)} scenario file(s), {len(errors)} with errors")
    return 2 if errors else 0


def _print_warnings(path: Path, warnings: Iterable[Any]) -> None:
    for warning in warnings:
        where = f"{path}:{warning.line}" if warning.line else str(path)
        print(f"warning: {where}: {warning.path}: {warning.message}", file=sys.stderr)


def _cmd_config_render(args: argparse.Namespace) -> int:
    from harness.config.butane import render_butane
    from harness.config.ignition import to_json
    from harness.errors import ConfigErrors

    path = Path(args.file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Butane file: {exc}", file=path) from None
    files_dir = Path(args.files_dir) if args.files_dir else None
    if files_dir is not None and not files_dir.is_dir():
        raise ConfigError("not a directory", key="--files-dir", value=str(files_dir))
    try:
        rendered = render_butane(text, source=path, files_dir=files_dir, strict=args.strict)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(f"error: {err.render()}", file=sys.stderr)
        _print_warnings(path, getattr(exc, "warnings", ()))
        print(f"{path}: {len(exc.errors)} problem(s), nothing written", file=sys.stderr)
        return exc.exit_code
    _print_warnings(path, rendered.warnings)
    if args.output:
        Path(args.output).write_text(to_json(rendered.ignition))
    else:
        sys.stdout.write(to_json(rendered.ignition))
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from harness.docgen import behaviour_doc
    from harness.paths import project_root

    out = project_root() / "docs" / "behaviour.md"
    out.write_text(behaviour_doc(project_root()))
    print(out)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import pytest

    from harness.check import (
        CheckRequest,
        check_architecture,
        check_unit_names,
        default_targets,
        write_scenario,
    )
    from harness.extensions.inspect import inspect_image
    from harness.extensions.lint import Finding, host_findings
    from harness.machine.probe import resolve
    from harness.scenario import load_scenario
    from harness.targets.selection import select_targets

    parse_vcpus(args.vcpus)  # bad input is refused before any image is read
    images = tuple(inspect_image(Path(p)) for p in args.images)
    install_as = _install_names(args.install_as, images)
    findings: list[Finding] = []
    for index, info in enumerate(images):
        print(f"image: {info.summary()}")
        findings += host_findings(info, install_as[index])
    test_script = Path(args.test) if args.test else None
    if test_script is not None and not test_script.is_file():
        raise ConfigError("no such file", key="--test", value=args.test)
    request = CheckRequest(images=images, units=check_unit_names(args.unit),
                           commands=tuple(args.run), test_script=test_script,
                           reboot=not args.no_reboot,
                           trust=tuple(Path(c) for c in args.trust), install_as=install_as)
    targets = [resolve(t) for t in select_targets(
        args.target or None, image=args.image, persona=args.persona, firmware=args.firmware)]
    for info in images:
        check_architecture(info, targets)
    if not args.target and not args.image:
        targets = default_targets(request, targets)
    if not (args.no_reboot or args.no_os_update):
        request = dataclasses.replace(request, os_update_targets=tuple(
            t.name for t in targets if t.kind == "reference"))
    for finding in findings:
        print(finding.text(), file=sys.stderr)
    warnings = [f.text() for f in findings if f.severity == "warning"]
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        print(f"error: {len(errors)} finding(s) the image fails on wherever it is shipped; "
              "nothing was booted", file=sys.stderr)
        _write_json(args.json, findings, None)
        return 1
    artifacts = Path(args.artifacts).resolve()  # pytest runs with the check's own rootdir
    check_dir = artifacts / "check"
    scenario = write_scenario(request, check_dir)
    load_scenario(scenario)  # a generated file that does not load is a bug: say so now
    (check_dir / "pytest.ini").write_text("[pytest]\n")  # not the caller's pytest settings
    print(f"scenario: {scenario}")
    print(f"targets: {', '.join(t.name for t in targets)}", flush=True)
    if args.dry_run:
        _write_json(args.json, findings, None)
        return _strict_verdict(args.strict, warnings, 0)
    argv = [str(scenario), "-c", str(check_dir / "pytest.ini"), "--rootdir", str(check_dir),
            "-p", "no:cacheprovider", "--artifacts", str(artifacts), *target_args(targets)]
    argv += xdist_args(args.jobs)
    argv += ["--backend", args.backend, "--vcpus", args.vcpus]
    for uri in args.libvirt_uri:
        argv += ["--libvirt-uri", uri]
    code = int(pytest.main(argv))
    for line in _next_update_verdicts(artifacts / "latest" / scenario.stem):
        print(line, file=sys.stderr)
        if line.startswith("warning:"):
            warnings.append(line)
    _write_json(args.json, findings, artifacts / "latest" / "matrix.json")
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("error: the check applies to none of the targets (see the reasons above)",
              file=sys.stderr)
        return 2
    return _strict_verdict(args.strict, warnings, code)


def _next_update_verdicts(runs: Path) -> list[str]:
    """What each target's run said about the next OS update (harness.check.NEXT_UPDATE):
    an image the update drops is a warning, because users lose it then."""
    from harness.check import NEXT_UPDATE

    out = []
    for log in sorted(runs.glob("*/steps.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(NEXT_UPDATE):
                severity = "warning" if " is dropped" in line else "note"
                out.append(f"{severity}: {log.parent.name}: {line}")
    return out


def _install_names(given: list[str], images: tuple[Any, ...]) -> tuple[str | None, ...]:
    """`--as NAME` per image, in order: a file name (NAME.raw for a raw image)."""
    if not given:
        return (None,) * len(images)
    if len(given) != len(images):
        raise ConfigError(f"give one --as per image ({len(images)} image(s))", key="--as",
                          value=" ".join(given))
    for name, info in zip(given, images, strict=True):
        raw = info.format != "directory"
        if "/" in name or not name or (raw and not name.endswith(".raw")):
            raise ConfigError("not a file name for the image", key="--as", value=name,
                              allowed="NAME.raw for a raw image (NAME for a directory), "
                                      "the name it is shipped or linked as")
    return tuple(given)


def _write_json(path: str | None, findings: list[Any], matrix: Path | None) -> None:
    """`--json FILE`: the findings on the host and each target's result, for CI."""
    if not path:
        return
    targets: dict[str, Any] = {}
    if matrix is not None and matrix.exists():
        results = json.loads(matrix.read_text())["results"]
        for row in results.values():
            for target, cell in row.items():
                targets[target] = {k: cell[k] for k in ("outcome", "detail", "findings")
                                   if k in cell}
    Path(path).write_text(json.dumps({"findings": [f.as_json() for f in findings],
                                      "targets": targets}, indent=2) + "\n")


def _strict_verdict(strict: bool, warnings: list[str], code: int) -> int:
    """With --strict every warning fails the check (exit 1), so an author's CI can gate on
    it; without, warnings are only printed."""
    if strict and warnings and code == 0:
        print(f"error: --strict: {len(warnings)} warning(s) fail the check", file=sys.stderr)
        return 1
    return code


def target_args(targets: Iterable[Any]) -> list[str]:
    """pytest options that select exactly `targets` again (names, target files, --image)."""
    argv: list[str] = []
    for t in targets:
        if t.image is None:
            argv += ["--target", t.name]
        elif t.image.source == "command line":
            argv += ["--image", str(t.image.path), "--persona", t.image.distribution,
                     "--firmware", t.image.firmware]
        else:
            argv += ["--target", t.image.source]
    return argv


def _add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", metavar="PATH",
                   help="a distribution's disk image (qcow2 or raw; .bz2/.xz/.gz unpacked "
                        "once) to run on, provisioned its own way; needs --persona")
    p.add_argument("--persona", choices=("flatcar", "fcos", "kairos"),
                   help="the distribution of --image")
    p.add_argument("--firmware", choices=("uefi", "bios"), default="uefi",
                   help="firmware that boots --image (default: %(default)s)")


def _cmd_shell(args: argparse.Namespace) -> int:
    from harness.debug import open_shell, shell_scenario
    from harness.machine.libvirt_backend import DEFAULT_URI
    from harness.machine.libvirt_hosts import select_backend
    from harness.machine.probe import resolve
    from harness.machine.vcpus import vcpus_for_run
    from harness.scenario import load_scenario
    from harness.session import HarnessSession
    from harness.targets.selection import select_targets

    vcpus, _why = vcpus_for_run(parse_vcpus(args.vcpus), machines_at_once=1)
    scenario = shell_scenario(load_scenario(Path(args.scenario)) if args.scenario else None,
                              args.until)
    if (args.target is None) == (args.image is None):
        raise ConfigError("name one target: a TARGET or --image DISK --persona NAME",
                          key="TARGET", value=args.target)
    targets = select_targets([args.target] if args.target else [], image=args.image,
                             persona=args.persona, firmware=args.firmware)
    if len(targets) != 1:
        raise ConfigError("names more than one target", key="TARGET", value=args.target,
                          allowed=", ".join(t.name for t in targets))
    backend = select_backend(args.backend, args.libvirt_uri or [DEFAULT_URI])
    session = HarnessSession(Path(args.artifacts).resolve(), backend=backend, vcpus=vcpus)
    try:
        target = resolve(targets[0])
        return open_shell(session, target, scenario=scenario, command=args.command)
    finally:
        session.close()
        backend.close()


def _cmd_test(args: argparse.Namespace) -> int:
    import pytest

    argv = list(args.pytest_args) or ["scenarios"]
    return int(pytest.main(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sysext-harness",
        description="Boot image-based Linux systems in VMs and check systemd extensions.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("targets", help="list the targets, their systemd and persona")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_targets)

    images = sub.add_parser("images", help="build reference target images")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    p = images_sub.add_parser("build", help="build (or reuse cached) target images")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="target names or glob patterns (default: all default targets)")
    p.set_defaults(func=_cmd_images_build)
    p = images_sub.add_parser(
        "export", help="export a reference target as one firmware-bootable qcow2 disk",
        description="Put a reference target on one GPT disk as a distribution ships it: "
                    "ESP with systemd-boot (and GRUB for --firmware bios, which then boots "
                    "under BIOS and UEFI), /usr slots A and B and the root partition, "
                    "without the harness's SSH-key and readiness units. First-boot "
                    "provisioning (Ignition, cloud-config) stays. Cached; see "
                    "docs/real-images.md.")
    p.add_argument("target", metavar="TARGET", help="a reference target name")
    p.add_argument("-o", "--output", required=True, metavar="DISK.qcow2",
                   help="where to write the disk (its directory must exist)")
    p.add_argument("--firmware", choices=("uefi", "bios"), default="uefi",
                   help="uefi: systemd-boot only; bios: also GRUB in the MBR and a BIOS "
                        "boot partition (default: %(default)s)")
    p.set_defaults(func=_cmd_images_export)

    sysext = sub.add_parser("sysext", help="extension images")
    sysext_sub = sysext.add_subparsers(dest="sysext_command", required=True)
    p = sysext_sub.add_parser("build", help="build an extension from a spec file")
    p.add_argument("spec", metavar="SPEC.yaml")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--target", default="refos-257-flatcar",
                   help="whose os-release resolves `host` values (default: %(default)s)")
    p.set_defaults(func=_cmd_sysext_build)

    config = sub.add_parser("config", help="provisioning configs (Butane -> Ignition)")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    p = config_sub.add_parser("render", help="translate Butane to Ignition JSON and validate it")
    p.add_argument("file", metavar="FILE.bu")
    p.add_argument("-o", "--output", metavar="FILE.ign", help="write here instead of stdout")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    p.add_argument("--files-dir", metavar="DIR",
                   help="where `local:`, `contents_local:` and `trees:` paths are looked up")
    p.set_defaults(func=_cmd_config_render)

    p = sub.add_parser("validate", help="check scenario files without booting anything")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("docs", help="regenerate docs/behaviour.md from the scenarios")
    p.set_defaults(func=_cmd_docs)

    p = sub.add_parser(
        "check", help="check extension images: merge, boot, units, commands",
        description="Boot the targets an image is meant for (by its extension-release ID), "
                    "install the image, and check that it merges at runtime and at boot, "
                    "that no unit fails that did not fail before, that the named units are "
                    "active and that the commands succeed. Writes an ordinary scenario "
                    "file and runs it; exit 0 when every target passes, 1 when one fails, "
                    "2 for bad input.")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="a .raw (squashfs, erofs or DDI) or a directory; several are "
                        "installed together")
    p.add_argument("--target", action="append", default=[], metavar="PATTERN",
                   help="targets to run on: glob patterns or target files (default: every "
                        "default target whose ID the images match)")
    _add_image_options(p)
    p.add_argument("--unit", action="append", default=[], metavar="UNIT",
                   help="a unit that must be active after boot (repeatable)")
    p.add_argument("--run", action="append", default=[], metavar="COMMAND",
                   help="a shell command that must exit 0 in the guest (repeatable)")
    p.add_argument("--test", metavar="SCRIPT",
                   help="a script copied into the guest and run there; must exit 0")
    p.add_argument("--trust", action="append", default=[], metavar="CERT",
                   help="a certificate (PEM or DER) the guest trusts for signed images, "
                        "installed in /etc/verity.d (repeatable)")
    p.add_argument("--no-reboot", action="store_true",
                   help="check the runtime merge only; --unit units are started by hand")
    p.add_argument("--no-os-update", action="store_true",
                   help="do not switch reference targets to their next OS release at the end "
                        "(the check says whether the image survives it)")
    p.add_argument("--dry-run", action="store_true",
                   help="read the images, choose the targets and write the scenario; boot "
                        "nothing")
    p.add_argument("--artifacts", default="artifacts", metavar="DIR",
                   help="artifact root; the scenario goes to DIR/check (default: %(default)s)")
    p.add_argument("--as", dest="install_as", action="append", default=[], metavar="NAME",
                   help="the file name the image is shipped or linked as (NAME.raw; one per "
                        "image, in order); default: its own file name")
    p.add_argument("--json", metavar="FILE",
                   help="write the findings and each target's result as JSON to FILE")
    p.add_argument("--strict", action="store_true",
                   help="fail the check (exit 1) on any warning, e.g. content the merge "
                        "leaves out (docs/check.md)")
    p.add_argument("-j", "--jobs", type=parse_jobs, default="1",
                   help="machines at once (pytest-xdist; default: %(default)s)")
    p.add_argument("--backend", choices=("qemu", "libvirt"), default="qemu",
                   help="what runs the VMs (default: %(default)s; docs/libvirt.md)")
    p.add_argument("--vcpus", default="auto", metavar="auto|N",
                   help="vCPUs per machine (default: auto, the host's cores divided by the "
                        "machines at once, 1 or 2)")
    p.add_argument("--libvirt-uri", action="append", default=[], metavar="URI",
                   help="libvirt connection for --backend libvirt (repeatable: several "
                        "hosts; default: qemu:///system)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "shell", help="a shell in a target's machine, optionally after a scenario's steps",
        description="Start a machine of TARGET (restored from its snapshot; the first time "
                    "the target boots cold), run a scenario's steps up to --until, and open "
                    "an SSH session in it with the run's own key. The machine stops when "
                    "the shell ends.")
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="a reference target name (refos-257-flatcar) or a target file; "
                        "or --image DISK --persona NAME")
    p.add_argument("--scenario", metavar="FILE", help="run this scenario's steps first")
    p.add_argument("--until", metavar="STEP",
                   help="stop after this step: its number (from 1) or its name")
    p.add_argument("--command", metavar="CMD",
                   help="run CMD in the guest instead of an interactive shell; exit with "
                        "its code")
    _add_image_options(p)
    p.add_argument("--artifacts", default="artifacts", metavar="DIR",
                   help="artifact root (default: %(default)s)")
    p.add_argument("--backend", choices=("qemu", "libvirt"), default="qemu",
                   help="what runs the VM (default: %(default)s)")
    p.add_argument("--libvirt-uri", action="append", default=[], metavar="URI",
                   help="libvirt connection for --backend libvirt")
    p.add_argument("--vcpus", default="auto", metavar="auto|N",
                   help="vCPUs of the machine (default: auto)")
    p.set_defaults(func=_cmd_shell)

    p = sub.add_parser("test", help="run scenarios (arguments go to pytest)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
