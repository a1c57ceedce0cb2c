"""Choose the accelerator: KVM only when a probe shows a real guest kernel runs with it.

On some hosts /dev/kvm exists but guests fail ("failed to set MSR") or hang, so the mere
device proves nothing. The probe boots the target kernel without a root file system for a
few seconds: if it gets as far as looking for a root (or panicking for lack of one), KVM
works. The answer is cached per host boot and QEMU version.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.machine.wait import wait_until
from harness.paths import cache_dir

# QEMU 7.2 TCG crashes early with the Debian 13 kernel on the default model; this boots.
TCG_CPU = "qemu64,-cx16"
# The translated-code cache, in MiB. QEMU's default (1 GiB) is never flushed in a run, and
# every reset reboot left the old boot's translations behind: successive reboots of one
# machine drifted from 9 s to 11-13 s. With 128 MiB the cache is flushed every few boots
# and reboots of refos-262-flatcar stayed at 8.3-9.2 s (mean of six: 8.9-9.2 s, against
# 9.8-10.3 s by default; 64 MiB flushed within a boot: 10-10.7 s). A restored run
# translates far less than this, so it is never flushed there.
TCG_TB_CACHE_MB = 128
PROBE_SECONDS = 12.0
_KERNEL_RAN = ("VFS: Unable to mount root", "Kernel panic", "Run /init", "Freeing unused")


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    args: tuple[str, ...]
    reason: str = ""


def tcg(reason: str = "") -> Accel:
    return Accel("tcg", ("-accel", f"tcg,thread=multi,tb-size={TCG_TB_CACHE_MB}",
                         "-cpu", TCG_CPU), reason)


def kvm() -> Accel:
    return Accel("kvm", ("-accel", "kvm", "-cpu", "host"), "probe guest ran under KVM")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def qemu_version() -> str:
    """`qemu-system-x86_64 --version`'s first line (a QEMU upgrade may change the answer)."""
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


def probe_kvm(kernel: Path) -> tuple[bool, str]:
    """Boot `kernel` under KVM briefly; True if it really executes."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible"
    with tempfile.TemporaryDirectory(prefix="sysext-harness-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
            "-serial", f"file:{console}",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def verdict() -> tuple[bool, str] | None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if any(marker in text for marker in _KERNEL_RAN):
                return True, "probe kernel ran under KVM"
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                last = err.strip().splitlines()[-1] if err.strip() else "?"
                return False, f"QEMU with KVM exited: {last}"
            return None

        try:
            return wait_until(verdict, timeout=PROBE_SECONDS, interval=0.2,
                              on_timeout=lambda: _ProbeTimeout(
                                  f"probe kernel printed nothing under KVM in "
                                  f"{PROBE_SECONDS:.0f}s"))
        except _ProbeTimeout as exc:
            return False, str(exc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


class _ProbeTimeout(Exception):
    """The probe's bounded wait ran out: KVM does not work here."""


def _host_kernel() -> Path | None:
    """A kernel to probe with when the target boots from a disk (none on the host side)."""
    found = sorted(Path("/boot").glob("vmlinuz-*"))
    return found[-1] if found else None


def choose_accel(kernel: Path | None) -> Accel:
    """KVM if it really works here (cached per host boot and QEMU version), else TCG.

    `kernel` is the target's (direct kernel boot) or None (a disk image: the host's own
    kernel is probed, if it has one). SYSEXT_HARNESS_ACCEL=tcg|kvm overrides the probe.
    """
    forced = os.environ.get("SYSEXT_HARNESS_ACCEL")
    if forced == "tcg":
        return tcg("forced by SYSEXT_HARNESS_ACCEL")
    if forced == "kvm":
        return kvm()
    cache_file = cache_dir() / "accel.json"
    key = {"boot_id": _boot_id(), "qemu": qemu_version()}
    try:
        cached = json.loads(cache_file.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return kvm() if cached["kvm"] else tcg(cached.get("reason", ""))
    except (OSError, ValueError, KeyError):
        pass
    kernel = kernel or _host_kernel()
    if kernel is None:
        return tcg("no kernel to probe KVM with")
    works, reason = probe_kvm(kernel)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({**key, "kvm": works, "reason": reason}))
    return kvm() if works else tcg(reason)
