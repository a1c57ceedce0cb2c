"""`make bench`: the figures that matter for speed, measured on this machine.

Prints image build time (cold, in a throw-away cache, and cached), cold boot to SSH-ready,
snapshot restore to first command, an OS update with its reboot (with `--backend libvirt`
also cold boot, save and restore through libvirt, beside QEMU's), and the wall time of the
default suite (the full matrix: every scenario on every default target) with its average
per scenario run. Results also go to artifacts/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.machine.backend import Backend
from harness.machine.capacity import parse_jobs, xdist_args
from harness.machine.libvirt_backend import DEFAULT_URI
from harness.machine.libvirt_hosts import BACKENDS, select_backend
from harness.machine.machine import Machine
from harness.machine.pool import MachinePool
from harness.machine.rundir import RunDir
from harness.paths import cache_dir, project_root
from harness.scenario.model import SWITCH_USR_SLOT
from harness.targets.build import ensure_target_image
from harness.targets.model import Target
from harness.targets.registry import get_target

RESTORES = 5
COMMANDS = 20
RESET_REBOOTS = 4  # a single reboot varies by a second or two on a shared host


# The figures issue 14 was filed with (2026-11-23, refos-257-flatcar, JOBS=2): printed
# beside today's so that progress reads against where it started.
AT_FILING = {
    "suite_wall_s": 5760.0,  # 96 min
    "suite_snapshot_run_avg_s": 4.3,
    "reboot_reset_total_s": 24.0,
    "command_exec_s": 0.21,
    "restore_to_first_command_s": 1.3,
}
# A run whose machine log has one of these booted (a reboot, an OS update, a cold boot with
# its own provisioning); so did a target's first run, which waited for the cold boot its
# snapshot comes from (READY_AFTER much later than RESTORED_IN). The others ran on their
# restored snapshot alone.
BOOTED_RUN_MARKERS = ("reboot (", "cold boot with provisioning")
RESTORED_IN = re.compile(r"restored from snapshot in ([0-9.]+) s")
READY_AFTER = re.compile(r"ready ([0-9.]+) s after request")


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _previous_results(path: Path) -> dict[str, object]:
    """The last `make bench` figures, printed beside the new ones."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def bench_image_build(target_name: str) -> dict[str, float]:
    """Cold build in an empty cache (keeps the real cache intact), then a cached lookup."""
    with tempfile.TemporaryDirectory(prefix="sysext-harness-bench-", dir=cache_dir().parent
                                     ) as tmp:
        env = dict(os.environ, SYSEXT_HARNESS_CACHE=tmp)
        code = f"from harness.targets.build import ensure_target_image as e; " \
               f"from harness.targets.registry import get_target as g; e(g({target_name!r}))"
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        cold = time.monotonic() - started
    ensure_target_image(get_target(target_name))  # make sure the real cache has it
    started = time.monotonic()
    ensure_target_image(get_target(target_name))
    cached = time.monotonic() - started
    return {"image_build_cold_s": round(cold, 2), "image_build_cached_s": round(cached, 4)}


def bench_boot_and_restore(target_name: str, backend: Backend | None = None,
                           prefix: str = "", os_update: bool = True) -> dict[str, object]:
    """Cold boot, save and restores on `backend` (default: QEMU); keys get `prefix`."""
    target = get_target(target_name)
    run = RunDir()
    pool = MachinePool(run.path, progress=_say, backend=backend)
    try:
        pool.snapshot(target)
        times = []
        for i in range(RESTORES):
            started = time.monotonic()
            machine: Machine = pool.start(target, pool.workdir(f"bench-{i}"))
            machine.succeed("true")
            times.append(time.monotonic() - started)
            pool.stop(machine)
        results: dict[str, object] = {
            **bench_commands(pool, target, prefix),
            f"{prefix}cold_boot_to_ssh_s": round(pool.boot_seconds[target.name], 2),
            f"{prefix}snapshot_save_s": round(pool.snapshot_seconds[target.name], 2),
            f"{prefix}restore_to_first_command_s": round(statistics.mean(times), 2),
            f"{prefix}restore_to_first_command_max_s": round(max(times), 2),
        }
        if os_update:
            results[f"{prefix}os_update_with_reboot_s"] = round(bench_os_update(pool, target), 2)
            results.update(bench_boot_profile(pool, target))
        return results
    finally:
        pool.close()
        run.cleanup()


def bench_commands(pool: MachinePool, target: Target, prefix: str = "") -> dict[str, float]:
    """The cost of one guest command (`true`) over the persistent shell and as an SSH exec
    of its own, the mean of COMMANDS each, on one restored machine."""
    machine = pool.start(target, pool.workdir("bench-commands"))
    try:
        ssh = machine.ssh_connection()
        ssh.execute("true")  # the shell is started by the first command
        results = {}
        for key, run in (("command_shell_s", lambda: ssh.execute("true")),
                         ("command_exec_s", lambda: ssh.exec_command("true"))):
            started = time.monotonic()
            for _ in range(COMMANDS):
                run()
            results[f"{prefix}{key}"] = round((time.monotonic() - started) / COMMANDS, 3)
        return results
    finally:
        pool.stop(machine)


_RESTARTING = "reboot: Restarting system"  # the kernel's last line before the reset
_STARTUP = re.compile(r"(?:(\d+)min )?(\d+(?:\.\d+)?)(ms|s) \((kernel|initrd|userspace)\)")


def _seconds(minutes: str | None, value: str, unit: str) -> float:
    return int(minutes or 0) * 60 + float(value) / (1000 if unit == "ms" else 1)


def startup_phases(analyze_time: str) -> dict[str, float]:
    """kernel/initrd/userspace seconds from `systemd-analyze time` ("Startup finished in
    1.2s (kernel) + 862ms (initrd) + 1min 2.3s (userspace) = ...")."""
    return {m.group(4): round(_seconds(m.group(1), m.group(2), m.group(3)), 2)
            for m in _STARTUP.finditer(analyze_time)}


def bench_boot_profile(pool: MachinePool, target: Target) -> dict[str, object]:
    """Where a reboot's time goes, phase by phase: the shutdown (from `systemctl reboot`
    to the kernel's reset), then kernel, initrd and userspace as the guest's
    `systemd-analyze time` counts them, then from the console's readiness line to the
    first SSH command; with the units that took longest."""
    machine = pool.start(target, pool.workdir("bench-boot-profile"))
    ready_line = machine.spec.readiness.ready_line or ""
    seen: dict[str, float] = {}
    stop = threading.Event()
    start_offset = len(machine.console_log())

    def watch() -> None:
        while not stop.is_set():
            text = machine.console_log()[start_offset:]
            for name, line in (("restart", _RESTARTING), ("ready", ready_line)):
                if name not in seen and line and line in text:
                    seen[name] = time.monotonic()
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        started = time.monotonic()
        machine.reboot()
        answered = time.monotonic()
        stop.set()
        watcher.join()
        machine.settle()
        phases = startup_phases(machine.succeed("systemd-analyze time"))
        blame = machine.succeed("systemd-analyze blame --no-pager | head -n 5")
        profile: dict[str, object] = {
            "reboot_total_s": round(answered - started, 2),
            "reboot_shutdown_s": round(seen.get("restart", started) - started, 2),
            **{f"reboot_{phase}_s": secs for phase, secs in phases.items()},
        }
        if "ready" in seen:
            profile["reboot_ready_line_to_ssh_s"] = round(answered - seen["ready"], 2)
        profile["reboot_slowest_units"] = [" ".join(line.split())
                                           for line in blame.splitlines()]
        times = []
        for _ in range(RESET_REBOOTS):  # the way scenario steps reboot (docs/targets.md)
            started = time.monotonic()
            machine.reboot(shutdown="reset")
            times.append(time.monotonic() - started)
        profile["reboot_reset_total_s"] = round(statistics.mean(times), 2)
        profile["reboot_reset_each_s"] = [round(t, 2) for t in times]
        return profile
    finally:
        stop.set()
        pool.stop(machine)


def bench_exported_boots(target_name: str) -> dict[str, float]:
    """Cold boot to the first command of the same target exported as a standalone disk
    (`images export`) and booted through the image-target path: firmware, boot loader,
    first-boot Ignition with the key, an SSH login found by trying, sudo for the command."""
    from harness.targets.export import export_disk
    from harness.targets.image_target import target_from_image

    reference = get_target(target_name)
    results: dict[str, float] = {}
    for firmware in ("uefi", "bios"):
        disk = export_disk(reference, firmware=firmware, progress=_say)
        target = target_from_image(str(disk), reference.persona.name, firmware)
        run = RunDir(label=f"bench-{firmware}")
        pool = MachinePool(run.path, progress=_say)
        try:
            started = time.monotonic()
            machine = pool.cold_boot(target, pool.workdir(f"bench-export-{firmware}"))
            machine.succeed("true")
            results[f"export_{firmware}_cold_boot_to_first_command_s"] = round(
                time.monotonic() - started, 2)
            pool.stop(machine)
        finally:
            pool.close()
            run.cleanup()
    return results


def bench_os_update(pool: MachinePool, target: Target) -> float:
    """An `os_update` step as scenarios run it: switch /usr to slot B, reboot, and wait
    until the guest answers on slot B (its boot merges extensions on the way)."""
    machine = pool.start(target, pool.workdir("bench-os-update"))
    try:
        started = time.monotonic()
        machine.succeed(f"{SWITCH_USR_SLOT} B")
        machine.reboot()
        slot = machine.succeed(f"{SWITCH_USR_SLOT} --current").strip()
        elapsed = time.monotonic() - started
        if slot != "B":
            raise HarnessError(f"{target.name} came back on /usr slot {slot!r}, not B")
        return elapsed
    finally:
        pool.stop(machine)


def bench_suite(target_pattern: str | None, jobs: str = "1",
                backend_args: Sequence[str] = ()) -> dict[str, object]:
    """Run the default scenario suite as `make test-scenario` does and time it."""
    with tempfile.TemporaryDirectory(prefix="sysext-harness-bench-junit-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider",
                f"--junitxml={junit}"]
        if target_pattern:
            argv += ["--target", target_pattern]
        argv += xdist_args(jobs)
        argv += backend_args
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=project_root())
        wall = time.monotonic() - started
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        assert suite is not None
        tests = int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    matrix = project_root() / "artifacts" / "latest" / "matrix.json"
    per_target = (json.loads(matrix.read_text()).get("seconds_per_target", {})
                  if matrix.exists() else {})
    return {
        **run_kinds(matrix),
        "suite_seconds_per_group": group_costs(matrix),
        "suite_seconds_per_target": per_target,
        "suite_wall_s": round(wall, 1),
        "suite_scenario_runs": tests,
        "suite_failed": failed,
        "suite_avg_per_scenario_s": round(wall / max(tests, 1), 2),
        "suite_exit_code": proc.returncode,
    }


def group_costs(matrix: Path) -> dict[str, dict[str, float]]:
    """Per scenario directory (scenarios/GROUP/): how many runs it had on a machine and
    their summed seconds, so the cost of a group of new scenarios can be read off."""
    if not matrix.exists():
        return {}
    root = project_root() / "scenarios"
    group_of = {path.stem: path.relative_to(root).parts[0] for path in root.rglob("*.yaml")
                if len(path.relative_to(root).parts) > 1}
    out: dict[str, dict[str, float]] = {}
    for scenario, row in json.loads(matrix.read_text()).get("results", {}).items():
        cost = out.setdefault(group_of.get(scenario, "(top level)"), {"runs": 0, "seconds": 0.0})
        for cell in row.values():
            if "seconds" in cell:
                cost["runs"] += 1
                cost["seconds"] = round(cost["seconds"] + float(cell["seconds"]), 1)
    return dict(sorted(out.items()))


def run_kinds(matrix: Path) -> dict[str, float]:
    """Mean duration of the passed runs that only used their snapshot, and of those that
    booted (BOOTED_RUN_MARKERS), with their counts."""
    if not matrix.exists():
        return {}
    results = json.loads(matrix.read_text()).get("results", {})
    kinds: dict[str, list[float]] = {"snapshot": [], "boot": []}
    for scenario, row in results.items():
        for target, cell in row.items():
            if cell.get("outcome") != "pass" or "seconds" not in cell:
                continue
            log = matrix.parent / scenario / target / "machine.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            booted = any(marker in text for marker in BOOTED_RUN_MARKERS)
            restored, ready = RESTORED_IN.search(text), READY_AFTER.search(text)
            if restored and ready and float(ready[1]) - float(restored[1]) > 2.0:
                booted = True  # waited for the target's cold boot
            kinds["boot" if booted else "snapshot"].append(float(cell["seconds"]))
    out: dict[str, float] = {}
    for kind, seconds in kinds.items():
        if seconds:
            out[f"suite_{kind}_runs"] = len(seconds)
            out[f"suite_{kind}_run_avg_s"] = round(statistics.mean(seconds), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench")
    parser.add_argument("--target", default=None,
                        help="targets for the suite run (default: every default target)")
    parser.add_argument("--boot-target", default="refos-257-flatcar")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--jobs", type=parse_jobs, default="1",
                        help="machines at once for the suite run (pytest-xdist workers)")
    parser.add_argument("--backend", choices=BACKENDS, default="qemu",
                        help="libvirt: also measure cold boot, save and restore through "
                             "libvirt (beside QEMU's), and run the suite through it")
    parser.add_argument("--libvirt-uri", action="append", default=[], metavar="URI")
    parser.add_argument("--vcpus", default="auto", metavar="auto|N",
                        help="vCPUs per machine in the suite run (default: auto)")
    args = parser.parse_args(argv)
    uris = args.libvirt_uri or [DEFAULT_URI]
    backend_args = (["--backend", "libvirt"] + [a for u in uris for a in ("--libvirt-uri", u)]
                    if args.backend == "libvirt" else [])
    backend_args += ["--vcpus", args.vcpus]

    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M"),
                                  "boot_target": args.boot_target, "cpus": os.cpu_count()}
    _say("image build (cold, in an empty cache; then cached)")
    results.update(bench_image_build(args.boot_target))
    _say("cold boot and snapshot restores")
    results.update(bench_boot_and_restore(args.boot_target))
    if args.backend == "libvirt":
        _say(f"cold boot and snapshot restores through libvirt ({uris[0]})")
        results.update(bench_boot_and_restore(
            args.boot_target, select_backend("libvirt", uris[:1]), prefix="libvirt_",
            os_update=False))
    _say("cold boots of the same target exported as a disk (UEFI, BIOS)")
    results.update(bench_exported_boots(args.boot_target))
    if not args.skip_suite:
        _say("default scenario suite")
        results["suite_jobs"] = args.jobs
        results["suite_vcpus"] = args.vcpus
        results.update(bench_suite(args.target, args.jobs, backend_args))

    out = project_root() / "artifacts" / "bench.json"
    previous = _previous_results(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"{'':<60} {'now':<8} {'previous run' if previous else '':<14} at filing")
    if previous:
        print(f"{'':<60} {'':<8} {str(previous.get('date', '?'))[:10]:<14} 2026-11-23")
    machine_labels = {  # measured for each backend (libvirt's keys have a prefix)
        "cold_boot_to_ssh_s": "cold boot to SSH-ready (direct kernel boot)",
        "snapshot_save_s": "snapshot save",
        "restore_to_first_command_s": f"snapshot restore to first command (mean of {RESTORES})",
        "restore_to_first_command_max_s": "snapshot restore to first command (max)",
    }
    labels = {
        "image_build_cold_s": "image build, cold (empty cache)",
        "image_build_cached_s": "image build, cached",
        "cold_boot_to_ssh_s": machine_labels["cold_boot_to_ssh_s"],
        "export_uefi_cold_boot_to_first_command_s":
            "exported disk, UEFI: cold boot to first command",
        "export_bios_cold_boot_to_first_command_s":
            "exported disk, BIOS: cold boot to first command",
        "command_shell_s": f"guest command, persistent shell (mean of {COMMANDS})",
        "command_exec_s": f"guest command, SSH exec of its own (mean of {COMMANDS})",
        **machine_labels,
        "os_update_with_reboot_s": "OS update (switch /usr slot, reboot, SSH on slot B)",
        **{f"libvirt_{key}": f"libvirt: {label}" for key, label in machine_labels.items()},
        "reboot_total_s": "reboot: `systemctl reboot` to the first command",
        "reboot_shutdown_s": "  shutdown (to the kernel's reset)",
        "reboot_kernel_s": "  kernel (systemd-analyze)",
        "reboot_initrd_s": "  initrd (systemd-analyze)",
        "reboot_userspace_s": "  userspace to the default target (systemd-analyze)",
        "reboot_ready_line_to_ssh_s": "  readiness line to the first command",
        "reboot_reset_total_s": "reboot as scenario steps do it: sync, reset, first command",
        "suite_wall_s": "full matrix wall time (default suite, default targets)",
        "suite_scenario_runs": "scenario runs (scenario x target)",
        "suite_avg_per_scenario_s": "average per scenario run (incl. cold boots)",
        "suite_snapshot_runs": "runs on their snapshot alone",
        "suite_snapshot_run_avg_s": "  average per run",
        "suite_boot_runs": "runs that reboot or boot with their own provisioning",
        "suite_boot_run_avg_s": "  average per run",
        "suite_failed": "failed",
    }
    for key, label in labels.items():
        if key in results:
            value = results[key]
            unit = " s" if key.endswith("_s") else ""
            before = f"({previous[key]}{unit})" if key in previous else ""
            filing = f"({AT_FILING[key]}{unit})" if key in AT_FILING else ""
            print(f"{label:<60} {f'{value}{unit}':<8} {before:<14} {filing}".rstrip())
    slowest = results.get("reboot_slowest_units", [])
    if isinstance(slowest, list) and slowest:
        print("  slowest units in that boot: " + "; ".join(slowest))
    per_group = results.get("suite_seconds_per_group", {})
    for group, cost in (per_group.items() if isinstance(per_group, dict) else ()):
        print(f"  scenarios/{group + '/':<30} {int(cost['runs']):>4} runs, "
              f"{cost['seconds']} s of machine time")
    per_target = results.get("suite_seconds_per_target", {})
    for target, seconds in (per_target.items() if isinstance(per_target, dict) else ()):
        print(f"  scenario runs on {target:<41} {seconds} s")
    print(f"\n(written to {out})")
    return 0 if results.get("suite_exit_code", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
