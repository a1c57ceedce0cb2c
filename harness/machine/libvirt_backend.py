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
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.errors import ConfigError, MachineError
from harness.machine.accel import TCG_TB_CACHE_MB
from harness.machine.backend import VmConfig
from harness.machine.guestport import PortShell
from harness.machine.libvirt_remote import (
    ConsoleMirror,
    HostStore,
    HostUri,
    RemoteFile,
    disk_capacity,
    ensure_event_loop,
    read_placeholder,
)
from harness.machine.qemu import OVMF_CODE, OVMF_VARS, QemuBackend, emulator_aborted, free_port
from harness.machine.qemu import tail as file_tail
from harness.machine.wait import wait_until
from harness.targets.boot import Drive, KernelBoot

log = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
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


def _console(devices: ET.Element, console: Path | None) -> None:
    """The serial console appended to a file on this host, or (None) a pty the harness
    reads over the connection (a remote host: `libvirt_remote.ConsoleMirror`)."""
    if console is None:
        _sub(_sub(devices, "serial", type="pty"), "target", port="0")
        return
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(console), append="on")
    _sub(serial, "target", port="0")


def _fw_cfg(dom: ET.Element, config: VmConfig) -> None:
    if not config.fw_cfg:
        return
    sysinfo = _sub(dom, "sysinfo", type="fwcfg")
    for name, path in config.fw_cfg.items():
        _sub(sysinfo, "entry", name=name, file=str(path))


def domain_xml(config: VmConfig, *, name: str, console: Path | None, ssh_port: int, nvram: Path,
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
    features = _sub(dom, "features")
    _sub(features, "acpi")
    if config.accel.name != "kvm":  # the QEMU backend's tb-size (harness.machine.accel)
        _sub(_sub(features, "tcg"), "tb-cache", str(TCG_TB_CACHE_MB), unit="MiB")
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
    if new.find("devices/serial/source") is None:  # a pty: the saved one's path is stale
        for parent in (*saved.iterfind("devices/serial"), *saved.iterfind("devices/console")):
            for source in parent.findall("source"):
                parent.remove(source)
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
class HostUnreachable(MachineError):
    """A libvirt host stopped answering: its remaining machines fail with this reason,
    other hosts go on."""


class LibvirtBackend:
    """VMs as transient domains of one libvirt connection.

    On this host (``qemu:///system``) disks are qcow2 overlays made by qemu-img next to the
    machine and the console is a file. On a remote host every file the domain uses lives
    in the host's storage pool (`harness.machine.libvirt_remote.HostStore`), the console
    is read over the connection and guests' SSH is reached through ``ssh -W``."""

    name = "libvirt"

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        self.uri = uri
        self.host = HostUri.parse(uri)
        self.host.check_reachable_guests()
        self._conn: Any = None
        self._store: HostStore | None = None
        self.owner = Owner.me()
        self.lost: str | None = None  # why the host is unreachable, once it is

    @property
    def remote(self) -> bool:
        return self.host.remote

    def note_if_lost(self, reason: str) -> None:
        """After a failed call: when a remote connection has died, the host is lost."""
        if self.lost is None and self._conn is not None and self.remote:
            try:
                alive = bool(self._conn.isAlive())
            except Exception:  # noqa: BLE001 - a dead connection may raise instead
                alive = False
            if not alive:
                self.lost = reason

    def error(self, what: str, exc: BaseException) -> MachineError:
        """A MachineError for a failed call; HostUnreachable when the connection died."""
        message = _message(exc)
        self.note_if_lost(message)
        if self.lost is not None:
            return HostUnreachable(f"libvirt host {self.uri} is unreachable ({what}: "
                                   f"{message})")
        return MachineError(f"libvirt ({self.uri}): {what}: {message}")

    @property
    def conn(self) -> Any:
        """The connection, opened on first use; stale domains and volumes of dead runs go
        then. Once the host is lost, every call fails at once with the reason."""
        if self.lost is not None:
            raise HostUnreachable(f"libvirt host {self.uri} is unreachable ({self.lost})")
        if self._conn is None:
            lv = _libvirt()
            if self.remote:
                ensure_event_loop(lv)
            try:
                self._conn = lv.open(self.uri)
            except lv.libvirtError as exc:
                raise self.error("cannot connect", exc) from exc
            if self.remote:
                self._watch_connection(self._conn, lv)
            removed = sweep_stale_domains(self._conn)
            if removed:
                log.warning("libvirt %s: destroyed %d stale domain(s): %s", self.uri,
                            len(removed), ", ".join(removed))
            if self.remote:
                self._store = HostStore(self.uri, lambda: self.conn, self.owner, lv)
                self._store.sweep(lambda v: Owner(v.host, v.pid, v.start).alive())
        return self._conn

    def _watch_connection(self, conn: Any, lv: Any) -> None:
        """Keepalives every 5 s (3 missed: the host is gone) and a close callback, so a
        host that goes away is noticed within seconds and its machines fail with why."""
        reasons = {lv.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
                   lv.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the host",
                   lv.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "no keepalive answer for 15 s"}

        def closed(_conn: Any, reason: int, _opaque: Any) -> None:
            if reason in reasons and self.lost is None:
                self.lost = reasons[reason]
                log.warning("libvirt host %s is unreachable: %s", self.uri, self.lost)

        with contextlib.suppress(lv.libvirtError):
            conn.setKeepAlive(5, 3)
        with contextlib.suppress(lv.libvirtError):
            conn.registerCloseCallback(closed, None)

    @property
    def store(self) -> HostStore:
        """The remote host's storage pool (remote URIs only)."""
        self.conn  # noqa: B018 - connects, which makes the store
        assert self._store is not None, "a local libvirt URI has no host store"
        return self._store

    def check(self, domain_types: Iterable[str] = ("qemu",)) -> None:
        """Fail now, before any VM starts, when the URI does not answer or cannot run
        x86_64 `pc` domains of these types (raises ConfigError: exit 2)."""
        lv = _libvirt()
        try:
            conn = self.conn
            for virt_type in domain_types:
                conn.getDomainCapabilities(EMULATOR, "x86_64", "pc", virt_type, 0)
            if self.remote:
                self.store.pool  # noqa: B018 - the pool must be usable too
        except (MachineError, lv.libvirtError) as exc:
            self.lost = None  # a later check may find it back
            self._conn = None
            raise ConfigError(f"libvirt backend unusable at {self.uri}: {_message(exc)}",
                              key="--libvirt-uri", value=self.uri) from exc

    def call(self, what: str, fn: Any) -> Any:
        """`fn()`, with libvirt's errors as MachineError (or HostUnreachable)."""
        lv = _libvirt()
        try:
            return fn()
        except lv.libvirtError as exc:
            raise self.error(what, exc) from exc

    def create_overlay(self, path: Path, backing: Path, backing_format: str) -> None:
        if not self.remote:
            QemuBackend().create_overlay(path, backing, backing_format)
            return
        disk = self.call(f"uploading {backing}", lambda: self.on_host(backing, backing_format))
        self.call(f"creating the overlay {path.name}",
                  lambda: self.store.overlay(path, disk.path, disk.format, disk.capacity))

    def on_host(self, local: Path, fmt: str) -> RemoteFile:
        """The host's copy of a local disk: what its placeholder names, or its content
        uploaded (once per host)."""
        placed = read_placeholder(local)
        if placed is None:
            return RemoteFile(self.uri, self.store.image(local), fmt, disk_capacity(local, fmt))
        if placed.uri != self.uri:
            raise MachineError(f"{local} is on libvirt host {placed.uri}, not {self.uri}")
        return placed

    def place_config(self, config: VmConfig, workdir: Path) -> VmConfig:
        """`config` with this host's paths: placeholders resolved, other files uploaded
        (by content, once per host) and writable ones given a run overlay."""
        def drive(d: Drive) -> Drive:
            disk = self.on_host(d.path, d.format)
            if d.readonly or read_placeholder(d.path) is not None:
                return Drive(Path(disk.path), disk.format, d.readonly)
            over = self.store.overlay(workdir / f"{d.path.name}.overlay", disk.path,
                                      disk.format, disk.capacity)
            return Drive(Path(over.path), "qcow2", False)

        def place() -> VmConfig:
            kernel = config.kernel
            if kernel is not None:
                kernel = KernelBoot(Path(self.store.image(kernel.kernel)),
                                    Path(self.store.image(kernel.initrd)), kernel.cmdline)
            fw_cfg = {name: Path(self.store.image(p)) for name, p in config.fw_cfg.items()}
            return replace(config, drives=tuple(drive(d) for d in config.drives),
                           kernel=kernel, fw_cfg=MappingProxyType(fw_cfg))
        return self.call("placing the machine's files", place)  # type: ignore[no-any-return]

    def vm(self, config: VmConfig, workdir: Path, console: Path) -> LibvirtVm:
        if config.accel.name == "kvm":
            self.check(("kvm",))
        if not self.remote:
            return LibvirtVm(self, config, workdir, console, workdir / "OVMF_VARS.fd")
        placed = self.place_config(config, workdir)
        nvram = Path(self.store.remote_path(self.store.run_name("OVMF_VARS.fd")))
        return LibvirtVm(self, placed, workdir, console, nvram)

    def close(self) -> None:
        """Remove this run's volumes from a remote host, then disconnect."""
        if self._store is not None and self.lost is None:
            with contextlib.suppress(Exception):  # a host that went away keeps them
                self._store.cleanup()  # until the next run's sweep
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                self._conn.close()
            self._conn = None
            self._store = None


class LibvirtVm:
    """One transient domain; a restore is a new domain from the saved state file."""

    def __init__(self, backend: LibvirtBackend, config: VmConfig, workdir: Path,
                 console: Path, nvram: Path) -> None:
        self.backend = backend
        self.config = config
        self.workdir = workdir
        self.console = console
        self.nvram = nvram
        self.name = _domain_name()
        self.ssh_port = 0
        self.dom: Any = None
        self.mirror: ConsoleMirror | None = None

    @property
    def ssh_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.ssh_port

    @property
    def ssh_proxy(self) -> str | None:
        return self.backend.host.ssh_proxy(self.ssh_port)

    @property
    def guest_shell(self) -> PortShell | None:
        return None  # no shell port in libvirt domains (the host may be remote): SSH only

    @property
    def where(self) -> str:
        return self.backend.uri

    @property
    def log_path(self) -> Path:
        return QEMU_LOG_DIR / f"{self.name}.log"

    def xml(self) -> str:
        return domain_xml(self.config, name=self.name,
                          console=None if self.backend.remote else self.console,
                          ssh_port=self.ssh_port, nvram=self.nvram, owner=self.backend.owner)

    def start(self, restore_from: Path | None = None) -> None:
        """Create the domain (cold boot), or restore it paused from a saved state; a port
        taken between choosing and binding it is tried again with another."""
        lv = _libvirt()
        conn = self.backend.conn
        for attempt in range(3):
            self.ssh_port = free_port()
            try:
                if restore_from is None:
                    self._create(conn)
                else:
                    self._restore(conn, restore_from)
                return
            except lv.libvirtError as exc:
                if "host forwarding" in _message(exc) and attempt < 2:  # port taken meanwhile
                    continue
                what = "restoring saved state" if restore_from else "starting the domain"
                raise self.backend.error(f"{what} {self.name}", exc) from exc

    def _create(self, conn: Any) -> None:
        if not self.backend.remote:
            self.dom = conn.createXML(self.xml(), 0)
            return
        # paused until the console is open, so the mirror misses nothing of the boot
        self.dom = conn.createXML(self.xml(), _libvirt().VIR_DOMAIN_START_PAUSED)
        self.mirror = ConsoleMirror(conn, _libvirt(), self.dom, self.console)
        self.dom.resume()

    def _restore(self, conn: Any, state: Path) -> None:
        lv = _libvirt()
        placed = read_placeholder(state)
        state_path = placed.path if placed is not None else str(state)
        saved = conn.saveImageGetXMLDesc(state_path, 0)
        dxml = restore_xml(saved, self.xml())
        self.name = ET.fromstring(dxml).findtext("name") or self.name
        conn.restoreFlags(state_path, dxml, lv.VIR_DOMAIN_SAVE_PAUSED)
        self.dom = conn.lookupByName(self.name)
        if self.backend.remote:
            self.mirror = ConsoleMirror(conn, lv, self.dom, self.console)

    def finish_restore(self, timeout: float) -> None:
        """The state is loaded once restoreFlags returns: let the guest run."""
        lv = _libvirt()
        try:
            self.dom.resume()
        except lv.libvirtError as exc:
            raise self.backend.error(f"resuming {self.name}", exc) from exc

    def running(self) -> bool:
        if self.dom is None or self.backend.lost is not None:
            return False
        try:
            return bool(self.dom.isActive())
        except Exception as exc:  # noqa: BLE001 - a transient domain that ended is gone
            self.backend.note_if_lost(_message(exc))
            return False

    def reset(self) -> None:
        lv = _libvirt()
        try:
            self.dom.reset(0)
        except lv.libvirtError as exc:
            raise self.backend.error(f"resetting {self.name}", exc) from exc

    def save_state(self, path: Path) -> None:
        """libvirt's save: the guest is paused, written to `path` (on a remote host, to a
        run file with a placeholder at `path`), and the domain ends."""
        lv = _libvirt()
        remote: RemoteFile | None = None
        target = str(path)
        if self.backend.remote:
            store = self.backend.store
            target = store.remote_path(store.run_name(path.name))
            remote = RemoteFile(self.backend.uri, target, "save", 0)
        try:
            self.dom.save(target)
        except lv.libvirtError as exc:
            raise self.backend.error(f"saving {self.name} to {target}", exc) from exc
        if remote is not None:
            self.backend.store.place(remote, path)
        self._close_mirror()

    resumes_after_save = False  # libvirt's save ends the domain

    def resume(self) -> None:
        raise MachineError(f"{self.name}: libvirt cannot run a domain on after saving it")

    def stop(self, timeout: float = 10.0) -> None:
        """End the domain: SIGTERM to QEMU first (like the QEMU backend's QMP `quit`, the
        guest does not shut down), then by force. Safe to call twice."""
        if not self.running():
            self._close_mirror()
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
        self._close_mirror()

    def _close_mirror(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None

    def last_words(self, lines: int = 10) -> str:
        """The tail of QEMU's log as libvirt keeps it (its stderr is in there)."""
        if self.backend.lost is not None:
            return f"libvirt host {self.backend.uri} is unreachable ({self.backend.lost})"
        if self.backend.remote and not self.log_path.exists():
            return f"(QEMU's log is {self.log_path} on {self.backend.host.host})"
        return file_tail(self.log_path, lines)

    def emulator_aborted(self) -> bool:
        return emulator_aborted(self.last_words(5))
