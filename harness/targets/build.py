"""Builds reference target images from Debian packages, cached by a hash of the recipe.

A base root (one per systemd version) is made once with mmdebstrap and kept as a directory.
Each target then gets its own small images from it: ``usr-a.img`` and ``usr-b.img`` (the
read-only ``/usr`` of slots A and B: the same tree with the persona's os-release before and
after an OS update, and the persona's built-in extensions built for each), ``root.img``
(persistent ``/etc``, ``/var``, ``/opt``), plus the kernel and a minimal initramfs
(initramfs.py) for direct kernel boot.
Nothing here mounts anything or uses a loop device: ``mkfs.ext4 -d`` copies a directory
straight into an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import versions
from harness.buildcache import (
    build_lock,
    cache_dir,
    debian_mirror,
    mmdebstrap,
    remove_stale_versions,
    rename_into_place,
    require_root,
    versions_of,
)
from harness.errors import HarnessError
from harness.paths import images_dir
from harness.run import run
from harness.targets import inuse
from harness.targets.initramfs import build_initramfs, initramfs_digest
from harness.targets.model import USR_SLOTS, BaseRecipe, Persona, Target, TargetImage, usr_slots

# Bump when the way images are assembled changes, so caches rebuild.
BUILDER_VERSION = "8"
PACKAGES_VERSION = "1"  # bump to force new mmdebstrap runs
USR_IMAGE_SIZE = "1536M"
ROOT_IMAGE_SIZE = "2G"
# net.ifnames=0: the NIC is eth0 from the moment the initramfs loads its driver. A rename
# by udev later in the boot raced with first-boot Ignition bringing the link up by hand.
# The rest only saves boot time in a test VM (measured under TCG, docs/targets.md): no BPF
# LSM (the default list without `bpf`; names a kernel lacks are ignored), else systemd
# verifies and attaches its restrict-fs program at every boot (~0.7 s); no crypto
# self-tests; no TSC watchdog (QEMU's TSC follows the host clock); no kernel audit. The
# console's terminal type and size are given (254 and later read them): else systemd 257+
# asks the serial terminal for its name and size at each boot, and, as nothing answers on
# a console the harness only reads, waits for two timeouts (~1 s under TCG).
KERNEL_CMDLINE = ("root=LABEL=REFOS-ROOT rw console=ttyS0,115200n8 panic=-1 mitigations=off "
                  "quiet net.ifnames=0 "
                  "lsm=landlock,lockdown,yama,integrity,apparmor,tomoyo,ipe,ima,evm "
                  "cryptomgr.notests tsc=reliable audit=0 "
                  "systemd.tty.term.console=vt220 systemd.tty.rows.console=24 "
                  "systemd.tty.columns.console=80")
# Timers and services that only cost boot time in a short-lived test VM.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "man-db.timer", "dpkg-db-backup.timer", "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    # Rebuilt caches nothing here reads; they run at first boot and after each OS update.
    "ldconfig.service", "systemd-journal-catalog-update.service", "systemd-hwdb-update.service",
    # Pseudo file systems and their modules that no scenario uses.
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "sys-kernel-config.mount",
    "dev-hugepages.mount", "dev-mqueue.mount", "modprobe@drm.service",
    "modprobe@efi_pstore.service", "modprobe@fuse.service", "modprobe@configfs.service",
    "systemd-pstore.service",
    # Inputs these VMs never get: network units from `ip=`, udev rules from credentials,
    # a saved random seed (virtio-rng seeds the kernel), networkd's saved state.
    "systemd-network-generator.service", "systemd-udev-load-credentials.service",
    "systemd-random-seed.service", "systemd-networkd-persistent-storage.service",
    # sshd runs without PAM, so no login makes a logind session; the initramfs mounts / and
    # /usr with the options in /etc/fstab, so there is nothing to remount.
    "systemd-logind.service", "systemd-remount-fs.service",
    # The journal is volatile (VOLATILE_JOURNAL_DROPIN): there is nothing to flush to /var.
    # Without PAM nothing reads /run/nologin, which systemd-user-sessions removes. utmp
    # records logins and runlevels for `who` and `last` (the bookworm images only).
    "systemd-journal-flush.service", "systemd-user-sessions.service",
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
)
# Coldplug skips devices nothing here waits for or loads a driver for: 71 ttys, 21 virtual
# consoles, wakeup sources, memory blocks, CPUs, ..., and the ACPI, PNP, platform and PCI
# devices, whose modaliases name only drivers that are built in, blacklisted
# (images/overlay/etc/modprobe.d/sysext-harness.conf) or loaded by the initramfs. That is
# about 200 of the 250 events a boot replays (the last 80 cost 1.6 s of CPU per boot under
# TCG). Block, net, virtio and misc devices are still triggered: their .device units, names
# and permissions appear as before.
COLDPLUG_DROPIN = "/etc/systemd/system/systemd-udev-trigger.service.d/50-sysext-harness.conf"
COLDPLUG_SKIPPED_SUBSYSTEMS = (
    "tty", "vc", "vtconsole", "wakeup", "memory", "memory_tiering", "node", "cpu",
    "machinecheck", "workqueue", "mem", "event_source", "clockevents", "clocksource",
    "thermal", "bdi", "container", "graphics", "dma_heap", "serial-base", "dmi", "serio",
    "input", "acpi", "pnp", "platform", "pci", "pci_bus",
)
# The journal stays in /run (from images/overlay): runs read only the current boot's journal.
VOLATILE_JOURNAL_DROPIN = "/etc/systemd/journald.conf.d/50-sysext-harness.conf"
# The one generator these images need: /etc/fstab says which /usr slot is mounted. The others
# (getty, ssh sockets, sysv, rc-local, gpt-auto, tpm2, ...) set up nothing a test VM uses,
# and each costs a cold process start under TCG at every boot and daemon-reload.
KEPT_GENERATORS = ("systemd-fstab-generator",)
# Image-based distributions merge extensions at every boot; Debian leaves these disabled.
ENABLED_UNITS = ("systemd-networkd.service", "systemd-sysext.service")
OPTIONAL_UNITS = ("systemd-confext.service",)  # 254 and later

Progress = Callable[[str], None]
_BUILDING = "building reference images"


def _stderr(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _overlay_files(root: Path) -> list[Path]:
    """The overlay as git has it: byte-code caches (from testing the guest scripts on the
    host) would change the recipe hash and land in images."""
    return [p for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts]


def _hash_tree(h: hashlib._Hash, root: Path) -> None:
    for path in _overlay_files(root):
        rel = path.relative_to(root).as_posix()
        h.update(f"{rel}\0{path.lstat().st_mode:o}\0".encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
        elif path.is_symlink():
            h.update(os.readlink(path).encode())


def packages_digest(base: BaseRecipe) -> str:
    """Identity of the plain mmdebstrap output: suites and packages only."""
    h = hashlib.sha256(f"mmdebstrap={PACKAGES_VERSION}\n".encode())
    h.update(json.dumps([base.suite, base.extra_suites, base.packages]).encode())
    return h.hexdigest()


def base_digest(base: BaseRecipe) -> str:
    """Identity of the customized root: packages plus overlay and image conventions."""
    h = hashlib.sha256(f"builder={BUILDER_VERSION}\n".encode())
    h.update(packages_digest(base).encode())
    h.update(json.dumps(base.__dict__, sort_keys=True, default=list).encode())
    h.update(json.dumps([KERNEL_CMDLINE, MASKED_UNITS, ENABLED_UNITS, KEPT_GENERATORS,
                         COLDPLUG_SKIPPED_SUBSYSTEMS]).encode())
    _hash_tree(h, images_dir() / "overlay")
    return h.hexdigest()


def target_digest(target: Target) -> str:
    h = hashlib.sha256(base_digest(target.base).encode())
    h.update(json.dumps(target.persona.__dict__, sort_keys=True, default=list).encode())
    h.update(json.dumps([s.os_release for s in usr_slots(target)], sort_keys=True).encode())
    h.update(f"{USR_IMAGE_SIZE} {ROOT_IMAGE_SIZE}".encode())
    h.update(initramfs_digest().encode())
    return h.hexdigest()


def _customize_root(tree: Path) -> None:
    """Shape a plain Debian root like an image-based system the harness can drive."""
    overlay = images_dir() / "overlay"
    for src in _overlay_files(overlay):
        dest = tree / src.relative_to(overlay)
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    own_units = sorted(p.name for p in (overlay / "usr/lib/systemd/system").glob("*")
                       if "[Install]" in p.read_text())
    optional = [u for u in OPTIONAL_UNITS if (tree / "usr/lib/systemd/system" / u).exists()]
    run(["systemctl", f"--root={tree}", "enable", *ENABLED_UNITS, *optional, *own_units])
    run(["systemctl", f"--root={tree}", "mask", *MASKED_UNITS])
    _mask_generators(tree)
    _narrow_coldplug(tree)
    _start_sshd_early(tree)
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # generated at first boot: every machine gets its own
    for junk in ("var/lib/apt/lists", "var/cache/apt", "var/cache/man"):
        shutil.rmtree(tree / junk, ignore_errors=True)
        (tree / junk).mkdir(parents=True, exist_ok=True)
    (tree / "etc/sysext-harness").mkdir(exist_ok=True)


def _mask_generators(tree: Path) -> None:
    """Mask every system generator but KEPT_GENERATORS, the documented way: a link to
    /dev/null of the same name in /etc/systemd/system-generators."""
    masks = tree / "etc/systemd/system-generators"
    masks.mkdir(parents=True, exist_ok=True)
    for generator in sorted((tree / "usr/lib/systemd/system-generators").iterdir()):
        if generator.name not in KEPT_GENERATORS:
            (masks / generator.name).unlink(missing_ok=True)
            (masks / generator.name).symlink_to("/dev/null")


def _narrow_coldplug(tree: Path) -> None:
    """A drop-in that replaces the coldplug's `udevadm trigger` (one line on every systemd
    version here; 252 had a second for subsystems) by one that skips
    COLDPLUG_SKIPPED_SUBSYSTEMS."""
    skipped = " ".join(f"--subsystem-nomatch={name}" for name in COLDPLUG_SKIPPED_SUBSYSTEMS)
    dropin = tree / COLDPLUG_DROPIN.lstrip("/")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("# sysext-harness: coldplug only what a test VM uses "
                      "(harness/targets/build.py)\n"
                      "[Service]\nExecStart=\n"
                      "ExecStart=-/usr/bin/udevadm trigger --type=devices --action=add "
                      f"{skipped}\n")


def _start_sshd_early(tree: Path) -> None:
    """sshd listens on the wildcard address, so it need not wait for network.target, and
    its `sshd -t` pre-check is one more cold start under TCG on every boot. An /etc copy of
    Debian's unit without both (a drop-in cannot remove an After=); the harness still
    connects only once sysext-harness-ssh-ready.service saw the address."""
    unit = (tree / "usr/lib/systemd/system/ssh.service").read_text()
    lines = []
    for line in unit.splitlines():
        if line.startswith("ExecStartPre="):
            continue
        if line.startswith("After="):
            after = [u for u in line.removeprefix("After=").split() if u != "network.target"]
            line = "After=" + " ".join(after)
        lines.append(line)
    (tree / "etc/systemd/system/ssh.service").write_text("\n".join(lines) + "\n")


def _debootstrap_tarball(base: BaseRecipe, progress: Progress) -> Path:
    """The plain mmdebstrap output as a tarball, cached by suites and packages only, so an
    overlay or persona change costs seconds, not a new bootstrap."""
    roots = cache_dir() / "roots"
    roots.mkdir(parents=True, exist_ok=True)
    tarball = roots / f"{base.name}-{packages_digest(base)[:16]}.tar"
    if tarball.exists():
        return tarball
    mirror = debian_mirror()
    progress(f"bootstrapping Debian {base.suite} (systemd {base.systemd_version}) "
             f"with mmdebstrap from {mirror} ...")
    started = time.monotonic()
    tmp = roots / f".{base.name}-bootstrap.tar"
    mmdebstrap(base.name, tmp, suites=[base.suite, *base.extra_suites], packages=base.packages,
               variant="apt", log_path=roots / f"{base.name}.build.log", mirror=mirror)
    remove_stale_versions(roots, base.name, ".tar")
    rename_into_place(tmp, tarball)
    progress(f"bootstrap {base.name} done in {time.monotonic() - started:.1f} s")
    return tarball


def ensure_base_root(base: BaseRecipe, progress: Progress = _stderr) -> Path:
    """The cached, customized Debian root for `base`; rebuilt when the recipe changed."""
    digest = base_digest(base)
    roots = cache_dir() / "roots"
    dest = roots / f"{base.name}-{digest[:16]}"
    if (dest / ".complete").exists():
        return dest
    require_root(_BUILDING)
    with build_lock():
        if (dest / ".complete").exists():
            return dest
        started = time.monotonic()
        tarball = _debootstrap_tarball(base, progress)
        tmp = roots / f".{base.name}-building"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run(["tar", "-xpf", tarball, "-C", tmp, "--numeric-owner"])
        _customize_root(tmp)
        (tmp / ".complete").write_text(digest + "\n")
        remove_stale_versions(roots, base.name)
        rename_into_place(tmp, dest)
        progress(f"root {base.name} ready in {time.monotonic() - started:.1f} s")
    return dest


def _os_release_text(fields: dict[str, str]) -> str:
    lines = []
    for key, value in fields.items():
        if re.fullmatch(r"[A-Za-z0-9._:/+-]+", value):
            lines.append(f"{key}={value}")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def _append_line(path: Path, line: str) -> None:
    text = path.read_text() if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + line + "\n")


def _add_user(rootfs: Path, user: str, uid: int = 1000) -> None:
    """Add the persona's default user by editing the account files (no chroot needed)."""
    etc = rootfs / "etc"
    if re.search(rf"^{re.escape(user)}:", (etc / "passwd").read_text(), re.M):
        return
    _append_line(etc / "passwd", f"{user}:x:{uid}:{uid}:{user}:/home/{user}:/bin/bash")
    _append_line(etc / "shadow", f"{user}:*:20000:0:99999:7:::")
    _append_line(etc / "group", f"{user}:x:{uid}:")
    _append_line(etc / "gshadow", f"{user}:!::")
    (etc / "sudoers.d").mkdir(exist_ok=True)
    sudoers = etc / "sudoers.d/90-persona-user"
    sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    home = rootfs / "home" / user
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)
    home.chmod(0o755)


def _apply_persona(rootfs: Path, target: Target) -> None:
    persona: Persona = target.persona
    _add_user(rootfs, persona.default_user)
    (rootfs / "etc/sysext-harness/persona.env").write_text(
        f"PERSONA={persona.name}\nDEFAULT_USER={persona.default_user}\nTARGET={target.name}\n"
        f"IGNITION_FW_CFG={persona.ignition_fw_cfg_name or ''}\n")
    # Flags that switch on the persona's first-boot provisioning units.
    if persona.provisioning == "ignition":
        (rootfs / "etc/sysext-harness/ignition-enabled").touch()
    elif persona.provisioning == "cloud-config":
        (rootfs / "etc/sysext-harness/cloud-config-enabled").touch()
    if persona.relink_per_version:
        (rootfs / "etc/sysext-harness/flatcar-relink-enabled").touch()
    (rootfs / "etc/sysext-harness/slot").write_text(USR_SLOTS[0] + "\n")
    for name, content, constraint in persona.files:
        if constraint is not None and not versions.matches(constraint, target.systemd_version):
            continue
        dest = rootfs / name.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content)
        dest.chmod(0o644)
    (rootfs / "etc/hostname").write_text(target.name + "\n")
    for directory in (persona.extension_dir, *persona.extension_dirs):
        if directory.startswith(("/usr", "/run")):
            continue  # /usr is read-only and built separately; /run is created at boot
        (rootfs / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _builtin_extensions(target: Target, tree: Path, os_release: dict[str, str],
                        placed: list[Path]) -> None:
    """Put the persona's built-in extension images, built for the slot's `os_release`
    (they are OS-bound), into the shared tree's /usr for the length of one mkfs. Appends
    what to remove afterwards to `placed`, also when building fails half-way."""
    persona = target.persona
    if not persona.builtin_extensions or not persona.builtin_extension_dir:
        return
    from harness.extensions.build import build_extension
    from harness.extensions.spec import parse_extension_spec

    dest_dir = tree / persona.builtin_extension_dir.lstrip("/")
    if not dest_dir.exists():
        top = dest_dir
        while not top.parent.exists():
            top = top.parent
        dest_dir.mkdir(parents=True)
        placed.append(top)
    for name, data in persona.builtin_extensions:
        spec = parse_extension_spec(name, data, source=f"images/personas/{persona.name}.yaml",
                                    key_prefix=f"builtin_extensions.{name}")
        artifact = build_extension(spec, os_release, cache_dir=cache_dir(),
                                   architecture=target.architecture, target_label=target.name)
        dest = dest_dir / artifact.filename
        if not placed or not dest.is_relative_to(placed[0]):
            placed.append(dest)
        shutil.copy2(artifact.path, dest)


def _newest(boot: Path, prefix: str) -> Path:
    found = sorted(boot.glob(prefix + "*"))
    if not found:
        raise HarnessError(f"no {prefix}* in {boot}: the root has no kernel")
    return found[-1]


def ensure_target_image(target: Target, progress: Progress = _stderr) -> TargetImage:
    """Build (or reuse) the images of one target."""
    digest = target_digest(target)
    dest = cache_dir() / "images" / f"{target.name}-{digest[:16]}"
    if not inuse.hold(dest):  # held (not removed by other runs' builds) until exit
        tree = ensure_base_root(target.base, progress)
        require_root(_BUILDING)
        with build_lock():  # image directories are only removed under this lock
            if not (dest / "manifest.json").exists():
                _build_target_image(target, tree, dest, digest, progress)
            if not inuse.hold(dest):
                raise HarnessError(f"{dest}: no manifest.json right after the build")
    manifest = json.loads((dest / "manifest.json").read_text())
    return TargetImage(target=target, directory=dest, root=dest / "root.img",
                       usr_a=dest / "usr-a.img", usr_b=dest / "usr-b.img",
                       kernel=dest / "vmlinuz",
                       initrd=dest / "initrd.img", cmdline=manifest["cmdline"], digest=digest)


def _build_target_image(target: Target, tree: Path, dest: Path, digest: str,
                        progress: Progress) -> None:
    started = time.monotonic()
    progress(f"assembling {target.name} images ...")
    tmp = dest.parent / f".{dest.name}-building"
    shutil.rmtree(tmp, ignore_errors=True)
    rootfs = tmp / "rootfs"
    rootfs.mkdir(parents=True)
    for entry in sorted(tree.iterdir()):
        if entry.name in ("usr", "boot", ".complete"):
            continue
        run(["cp", "-a", entry, rootfs / entry.name])
    (rootfs / "usr").mkdir()
    (rootfs / "boot").mkdir()
    _apply_persona(rootfs, target)

    slots = usr_slots(target)
    os_release = tree / "usr/lib/os-release"
    original = os_release.read_bytes()
    # The shared tree is the base root of every target: the slot's os-release and built-ins
    # are in it only for the length of one mkfs, and the original is always put back.
    try:
        for slot in slots:
            placed: list[Path] = []
            try:
                _builtin_extensions(target, tree, slot.os_release, placed)
                os_release.unlink(missing_ok=True)  # Debian ships a regular file, not a link
                os_release.write_text(_os_release_text(slot.os_release))
                run(["mkfs.ext4", "-q", "-F", "-L", slot.label, "-d", tree / "usr",
                     tmp / slot.filename, USR_IMAGE_SIZE])
            finally:
                for path in placed:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
    finally:
        os_release.unlink(missing_ok=True)
        os_release.write_bytes(original)
    run(["mkfs.ext4", "-q", "-F", "-L", "REFOS-ROOT", "-d", rootfs, tmp / "root.img",
         ROOT_IMAGE_SIZE])
    shutil.rmtree(rootfs)
    kernel = _newest(tree / "boot", "vmlinuz-")
    shutil.copy2(kernel, tmp / "vmlinuz")
    build_initramfs(tree / "usr/lib/modules" / kernel.name.removeprefix("vmlinuz-"),
                    tmp / "initrd.img")
    for image in (*(slot.filename for slot in slots), "root.img"):
        (tmp / image).chmod(0o444)  # bases are never written: machines use overlays
    manifest = {
        "target": target.name,
        "digest": digest,
        "systemd_version": target.systemd_version,
        "persona": target.persona.name,
        "suite": target.base.suite,
        "os_release": target.os_release,
        "os_release_b": target.os_release_b,
        "usr_slots": {slot.slot: {"label": slot.label, "image": slot.filename}
                      for slot in slots},
        "cmdline": KERNEL_CMDLINE,
        "kernel": kernel.name,
        "build_seconds": round(time.monotonic() - started, 2),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for stale in versions_of(dest.parent, target.name):
        if not inuse.remove_unless_used(stale):
            progress(f"keeping {stale.name}: another harness run still uses it")
    rename_into_place(tmp, dest)
    progress(f"{target.name} ready in {time.monotonic() - started:.1f} s")
