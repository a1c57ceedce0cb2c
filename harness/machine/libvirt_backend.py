"""The libvirt backend: each VM is a transient libvirt domain made from the same `VmConfig`.

The virtual hardware matches the QEMU backend's (`harness.machine.qemu`): machine `pc`,
TCG with `qemu64,-cx16` (or KVM), virtio disks with cache=unsafe, fw_cfg entries, the serial
console appended to a file, and QEMU's user-mode networking with the guest's port 22
forwarded to a loopback port (passed through as <qemu:commandline>: see `_network`).
Saving is libvirt's save to a file; a restore loads that file with the saved domain's XML
given this VM's host side (the fresh overlay, console and port), paused, and resumes it.
libvirt keeps the saved name and UUID, so one snapshot has one restored domain at a time.

Transient domains vanish when they stop, but not when the harness dies: their names and
`<metadata>` carry the owning process (pid and start time), and `sweep_stale_domains`
destroys those whose owner is gone each time the backend connects.

`libvirt` (libvirt-python) is imported only here and only when a libvirt backend is made,
so the QEMU path never needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, MachineError
from harness.machine.backend import Backend, VmConfig
from harness.machine.qemu import OVMF_CODE, OVMF_VARS, QemuBackend, emulator_aborted, free_port
from harness.machine.qemu import tail as file_tail
from harness.machine.wait import wait_until

log = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
BACKENDS = ("qemu", "libvirt")
NAME_PREFIX = "sysext-harness-"
EMULATOR = "/usr/bin/qemu-system-x86_64"  # QEMU 10 from bookworm-backports on Debian 12
METADATA_NS = "https://github.com/sysext-harness/libvirt/1"
METADATA_KEY = "sysext-harness"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"  # <qemu:commandline>
# Every VM has its own user network, so one fixed MAC is fine; the NIC's PCI slot is fixed
# too (libvirt gives its own devices the low slots), so a restore finds the saved layout.
GUEST_MAC = "52:54:00:12:34:56"
NIC_SLOT = "0x10"
_HOSTFWD = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")  # qemu:///system's per-domain QEMU log
_NAMES = itertools.count(1)
# starttime, field 22 of /proc/PID/stat, counted from the fields after "pid (comm) "
_START_INDEX = 19


def _libvirt() -> Any:
    """The libvirt module, imported on first use (the QEMU backend never needs it)."""
    try:
        lv = importlib.import_module("libvirt")
    except ImportError as exc:
        raise ConfigError("the libvirt backend needs the libvirt-python package "
                          "(pip install libvirt-python; it builds against libvirt-dev)",
                          key="--backend", value="libvirt") from exc
    # libvirt prints every error to stderr by default; ours are raised as MachineError,
    # and "no such domain" after a save or destroy is expected.
    lv.registerErrorHandler(lambda _ctx, _err: None, None)
    return lv


def _message(exc: BaseException) -> str:
    get = getattr(exc, "get_error_message", None)
    return str(get() if callable(get) else exc)


# ----- who owns a domain -----------------------------------------------------------------
def process_start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (None: no such process): with the
    pid it names one process, even after the pid has been reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
    return fields[_START_INDEX] if len(fields) > _START_INDEX else None


@dataclass(frozen=True)
class Owner:
    """The harness process that made a domain."""

    host: str
    pid: int
    start: str

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_time(pid) or "")

    def element(self) -> ET.Element:
        el = ET.Element(f"{{{METADATA_NS}}}run")
        el.set("host", self.host)
        el.set("pid", str(self.pid))
        el.set("start", self.start)
        return el

    @classmethod
    def from_domain_xml(cls, xml: str) -> Owner | None:
        """The owner recorded in a domain's XML, or None (not one of ours)."""
        run = ET.fromstring(xml).find(f"metadata/{{{METADATA_NS}}}run")
        if run is None or not run.get("pid", "").isdigit():
            return None
        return cls(run.get("host", ""), int(run.get("pid", "0")), run.get("start", ""))

    def alive(self) -> bool:
        """True unless this owner is known to be gone (another host's owner counts as
        alive: we cannot see its processes)."""
        if self.host != socket.gethostname():
            return True
        return process_start_time(self.pid) == self.start


def sweep_stale_domains(conn: Any, alive: Any = None) -> list[str]:
    """Destroy our domains whose owning harness process is gone; returns their names.

    `alive(owner) -> bool` decides (default `Owner.alive`). Domains of live runs and
    domains that are not ours (no sysext-harness name or metadata) are left alone."""
    is_alive = alive or Owner.alive
    removed: list[str] = []
    for dom in conn.listAllDomains(0):
        name = dom.name()
        if not name.startswith(NAME_PREFIX):
            continue
        try:
            owner = Owner.from_domain_xml(dom.XMLDesc(0))
            if owner is None or is_alive(owner):
                continue
            dom.destroy()
        except Exception as exc:  # noqa: BLE001 - a domain that vanished meanwhile is fine
            log.warning("could not sweep stale domain %s: %s", name, _message(exc))
            continue
        removed.append(name)
        log.warning("destroyed stale domain %s (its harness process %d is gone)",
                    name, owner.pid)
    return removed


# ----- domain XML ------------------------------------------------------------------------
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _os(dom: ET.Element, config: VmConfig, nvram: Path) -> None:
    """Direct kernel boot, UEFI (OVMF with a per-VM variable store) or BIOS."""
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if config.kernel is not None:
        _sub(os_el, "kernel", str(config.kernel.kernel))
        _sub(os_el, "initrd", str(config.kernel.initrd))
        _sub(os_el, "cmdline", config.kernel.cmdline)
    elif config.firmware == "uefi":
        _sub(os_el, "loader", str(OVMF_CODE), readonly="yes", type="pflash")
        _sub(os_el, "nvram", str(nvram), template=str(OVMF_VARS))
        _sub(os_el, "boot", dev="hd")
    else:
        _sub(os_el, "boot", dev="hd")


def _cpu(dom: ET.Element, config: VmConfig) -> None:
    """TCG: `-cpu qemu64,-cx16` as the QEMU backend (harness.machine.accel); KVM: host."""
    if config.accel.name == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
        return
    cpu = _sub(dom, "cpu", mode="custom", match="exact", check="none")
    _sub(cpu, "model", "qemu64", fallback="forbid")
    _sub(cpu, "feature", policy="disable", name="cx16")


def _disks(devices: ET.Element, config: VmConfig) -> None:
    for index, drive in enumerate(config.drives):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=drive.format, cache="unsafe")
        _sub(disk, "source", file=str(drive.path))
        _sub(disk, "target", dev=f"vd{chr(ord('a') + index)}", bus="virtio")
        if drive.readonly:
            _sub(disk, "readonly")


def _network(dom: ET.Element, ssh_port: int) -> None:
    """QEMU's user networking, passed through: host 127.0.0.1:`ssh_port` reaches the
    guest's port 22, exactly the QEMU backend's -netdev.

    libvirt's own way (<interface type='user'> with <portForward>) needs the passt backend,
    which Debian 12's libvirt 9.0 rejects ("Invalid value ... 'passt'"; it came in 9.2).
    libvirt then marks the domain tainted (custom-argv); that is all it costs. The NIC's
    PCI slot is fixed so a restore finds it where the saved machine had it."""
    cmdline = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in ("-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC},addr={NIC_SLOT}"):
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", value=arg)


def forwarded_port(xml: str) -> int | None:
    """The host port a domain's XML forwards to the guest's SSH port."""
    for arg in ET.fromstring(xml).iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg"):
        found = _HOSTFWD.search(arg.get("value", ""))
        if found:
            return int(found.group(1))
    return None


def _console(devices: ET.Element, console: Path) -> None:
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(console), append="on")
    _sub(serial, "target", port="0")


def _fw_cfg(dom: ET.Element, config: VmConfig) -> None:
    if not config.fw_cfg:
        return
    sysinfo = _sub(dom, "sysinfo", type="fwcfg")
    for name, path in config.fw_cfg.items():
        _sub(sysinfo, "entry", name=name, file=str(path))


def domain_xml(config: VmConfig, *, name: str, console: Path, ssh_port: int, nvram: Path,
               owner: Owner, emulator: str = EMULATOR) -> str:
    """The transient domain of `config`, as close to the QEMU backend's VM as libvirt goes
    (no USB, balloon or graphics: QEMU's -nodefaults)."""
    ET.register_namespace("sysext", METADATA_NS)
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type="kvm" if config.accel.name == "kvm" else "qemu")
    _sub(dom, "name", name)
    _sub(dom, "metadata").append(owner.element())
    _sub(dom, "memory", str(config.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(config.cpus))
    _os(dom, config, nvram)
    _sub(_sub(dom, "features"), "acpi")
    _cpu(dom, config)
    _fw_cfg(dom, config)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _sub(devices, "emulator", emulator)
    _disks(devices, config)
    _console(devices, console)
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    _network(dom, ssh_port)
    return ET.tostring(dom, encoding="unicode")


def restore_xml(saved_xml: str, new_xml: str) -> str:
    """The saved domain's XML with this VM's host side: disk sources, console file, port
    forward and metadata from `new_xml`; the guest ABI (addresses, UUID, MAC) stays."""
    saved, new = ET.fromstring(saved_xml), ET.fromstring(new_xml)
    new_disks = new.findall("devices/disk/source")
    for source, new_source in zip(saved.findall("devices/disk/source"), new_disks,
                                  strict=True):
        source.set("file", new_source.get("file", ""))
    _replace_child(saved, new, "devices/serial", "source")
    _replace_child(saved, new, ".", f"{{{QEMU_NS}}}commandline")
    _replace_child(saved, new, "os", "nvram")
    _replace_child(saved, new, ".", "metadata")
    return ET.tostring(saved, encoding="unicode")


def _replace_child(saved: ET.Element, new: ET.Element, parent_path: str, tag: str) -> None:
    """Put `new`'s child `tag` of `parent_path` in place of `saved`'s, if both have it."""
    parent, new_parent = saved.find(parent_path), new.find(parent_path)
    if parent is None or new_parent is None:
        return
    old_el, new_el = parent.find(tag), new_parent.find(tag)
    if old_el is None or new_el is None:
        return
    index = list(parent).index(old_el)
    parent.remove(old_el)
    parent.insert(index, new_el)


def _domain_name() -> str:
    return f"{NAME_PREFIX}{os.getpid()}-{next(_NAMES)}"


# ----- the backend -------------------------------------------------------------------------
class LibvirtBackend:
    """VMs as transient domains of one libvirt connection; disks as qcow2 overlays made by
    qemu-img on this host (the URI must be local: remote hosts are a later part)."""

    name = "libvirt"

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        self.uri = uri
        self._conn: Any = None
        self.owner = Owner.me()

    def error(self, what: str, exc: BaseException) -> MachineError:
        return MachineError(f"libvirt ({self.uri}): {what}: {_message(exc)}")

    @property
    def conn(self) -> Any:
        """The connection, opened on first use; stale domains of dead runs go then."""
        if self._conn is None:
            lv = _libvirt()
            try:
                self._conn = lv.open(self.uri)
            except lv.libvirtError as exc:
                raise self.error("cannot connect", exc) from exc
            removed = sweep_stale_domains(self._conn)
            if removed:
                log.warning("libvirt: destroyed %d stale domain(s): %s", len(removed),
                            ", ".join(removed))
        return self._conn

    def check(self, domain_types: Iterable[str] = ("qemu",)) -> None:
        """Fail now, before any VM starts, when the URI does not answer or cannot run
        x86_64 `pc` domains of these types (raises ConfigError: exit 2)."""
        lv = _libvirt()
        try:
            conn = self.conn
            for virt_type in domain_types:
                conn.getDomainCapabilities(EMULATOR, "x86_64", "pc", virt_type, 0)
        except (MachineError, lv.libvirtError) as exc:
            raise ConfigError(f"libvirt backend unusable at {self.uri}: {_message(exc)}",
                              key="--libvirt-uri", value=self.uri) from exc

    def create_overlay(self, path: Path, backing: Path, backing_format: str) -> None:
        QemuBackend().create_overlay(path, backing, backing_format)

    def vm(self, config: VmConfig, workdir: Path, console: Path) -> LibvirtVm:
        if config.accel.name == "kvm":
            self.check(("kvm",))
        return LibvirtVm(self, config, workdir, console)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                self._conn.close()
            self._conn = None


class LibvirtVm:
    """One transient domain; a restore is a new domain from the saved state file."""

    def __init__(self, backend: LibvirtBackend, config: VmConfig, workdir: Path,
                 console: Path) -> None:
        self.backend = backend
        self.config = config
        self.workdir = workdir
        self.console = console
        self.name = _domain_name()
        self.ssh_port = 0
        self.dom: Any = None

    @property
    def ssh_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.ssh_port

    @property
    def log_path(self) -> Path:
        return QEMU_LOG_DIR / f"{self.name}.log"

    def xml(self) -> str:
        return domain_xml(self.config, name=self.name, console=self.console,
                          ssh_port=self.ssh_port, nvram=self.workdir / "OVMF_VARS.fd",
                          owner=self.backend.owner)

    def start(self, restore_from: Path | None = None) -> None:
        """Create the domain (cold boot), or restore it paused from a saved state; a port
        taken between choosing and binding it is tried again with another."""
        lv = _libvirt()
        conn = self.backend.conn
        for attempt in range(3):
            self.ssh_port = free_port()
            try:
                if restore_from is None:
                    self.dom = conn.createXML(self.xml(), 0)
                else:
                    self._restore(conn, restore_from)
                return
            except lv.libvirtError as exc:
                if "host forwarding" in _message(exc) and attempt < 2:  # port taken meanwhile
                    continue
                what = "restoring saved state" if restore_from else "starting the domain"
                raise self.backend.error(f"{what} {self.name}", exc) from exc

    def _restore(self, conn: Any, state: Path) -> None:
        lv = _libvirt()
        saved = conn.saveImageGetXMLDesc(str(state), 0)
        dxml = restore_xml(saved, self.xml())
        self.name = ET.fromstring(dxml).findtext("name") or self.name
        conn.restoreFlags(str(state), dxml, lv.VIR_DOMAIN_SAVE_PAUSED)
        self.dom = conn.lookupByName(self.name)

    def finish_restore(self, timeout: float) -> None:
        """The state is loaded once restoreFlags returns: let the guest run."""
        lv = _libvirt()
        try:
            self.dom.resume()
        except lv.libvirtError as exc:
            raise self.backend.error(f"resuming {self.name}", exc) from exc

    def running(self) -> bool:
        if self.dom is None:
            return False
        try:
            return bool(self.dom.isActive())
        except Exception:  # noqa: BLE001 - a transient domain that ended is gone
            return False

    def reset(self) -> None:
        lv = _libvirt()
        try:
            self.dom.reset(0)
        except lv.libvirtError as exc:
            raise self.backend.error(f"resetting {self.name}", exc) from exc

    def save_state(self, path: Path) -> None:
        """libvirt's save: the guest is paused, written to `path`, and the domain ends."""
        lv = _libvirt()
        try:
            self.dom.save(str(path))
        except lv.libvirtError as exc:
            raise self.backend.error(f"saving {self.name} to {path}", exc) from exc

    def stop(self, timeout: float = 10.0) -> None:
        """End the domain: SIGTERM to QEMU first (like the QEMU backend's QMP `quit`, the
        guest does not shut down), then by force. Safe to call twice."""
        if not self.running():
            return
        with contextlib.suppress(Exception):  # graceful may fail or time out: force below
            self.dom.destroyFlags(_libvirt().VIR_DOMAIN_DESTROY_GRACEFUL)
        with contextlib.suppress(MachineError):
            wait_until(lambda: True if not self.running() else None, timeout=timeout,
                       interval=0.1, on_timeout=lambda: MachineError("still running"))
        self.kill()

    def kill(self) -> None:
        if self.running():
            try:
                self.dom.destroy()
            except Exception as exc:  # noqa: BLE001 - it may have ended meanwhile
                if self.running():
                    raise self.backend.error(f"destroying {self.name}", exc) from exc

    def last_words(self, lines: int = 10) -> str:
        """The tail of QEMU's log as libvirt keeps it (its stderr is in there)."""
        return file_tail(self.log_path, lines)

    def emulator_aborted(self) -> bool:
        return emulator_aborted(self.last_words(5))


def select_backend(name: str, uri: str = DEFAULT_URI) -> Backend:
    """The backend `--backend` names, checked now (ConfigError, exit 2, before any VM)."""
    if name == "qemu":
        return QemuBackend()
    if name == "libvirt":
        backend = LibvirtBackend(uri)
        backend.check()
        return backend
    raise ConfigError("unknown machine backend", key="--backend", value=name, allowed=BACKENDS)
