"""The libvirt backend's domain XML and its sweep of dead runs' domains (no libvirt needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.machine.accel import kvm, tcg
from harness.machine.backend import VmConfig
from harness.machine.libvirt_backend import (
    GUEST_MAC,
    METADATA_NS,
    QEMU_NS,
    Owner,
    domain_xml,
    forwarded_port,
    process_start_time,
    restore_xml,
    sweep_stale_domains,
)
from harness.machine.libvirt_hosts import select_backend
from harness.machine.qemu import OVMF_CODE, OVMF_VARS, QemuBackend
from harness.targets.boot import Drive, KernelBoot

OWNER = Owner("host-a", 4242, "777")
ROOT = Drive(Path("/run/m1/root.qcow2"), "qcow2")
USR_A = Drive(Path("/images/usr-a.img"), "raw", readonly=True)
USR_B = Drive(Path("/images/usr-b.img"), "raw", readonly=True)
KERNEL = KernelBoot(Path("/images/vmlinuz"), Path("/images/initrd.img"),
                    "root=LABEL=REFOS-ROOT console=ttyS0")


def config(**overrides: object) -> VmConfig:
    values: dict[str, object] = {
        "drives": (ROOT, USR_A, USR_B), "accel": tcg(), "kernel": KERNEL,
        "memory_mb": 1024, "cpus": 2,
        "fw_cfg": {"opt/org.sysext-harness/ssh-key": Path("/run/ssh/id.pub")},
    }
    values.update(overrides)
    return VmConfig(**values)  # type: ignore[arg-type]


def parse(cfg: VmConfig, *, port: int = 40022, name: str = "sysext-harness-4242-1"
          ) -> ET.Element:
    return ET.fromstring(domain_xml(cfg, name=name, console=Path("/run/m1/console.log"),
                                    ssh_port=port, nvram=Path("/run/m1/OVMF_VARS.fd"),
                                    owner=OWNER))


def test_tcg_domain_matches_the_qemu_backend() -> None:
    dom = parse(config())
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "sysext-harness-4242-1"
    assert dom.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]
    assert dom.findtext("memory") == "1024" and dom.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert dom.findtext("vcpu") == "2"
    cpu = dom.find("cpu")
    assert cpu is not None and cpu.findtext("model") == "qemu64"
    assert [(f.get("policy"), f.get("name")) for f in cpu.findall("feature")] == [
        ("disable", "cx16")]
    cache = dom.find("features/tcg/tb-cache")  # the QEMU backend's -accel tcg,tb-size=
    assert cache is not None and (cache.text, cache.get("unit")) == ("128", "MiB")
    assert dom.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"


def test_kvm_domain_uses_the_host_cpu() -> None:
    dom = parse(config(accel=kvm()))
    assert dom.get("type") == "kvm"
    assert dom.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert dom.find("features/tcg") is None


def test_disks_in_order_with_cache_unsafe_and_readonly() -> None:
    disks = parse(config()).findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [  # type: ignore[union-attr]
        str(ROOT.path), str(USR_A.path), str(USR_B.path)]
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb", "vdc"]  # type: ignore[union-attr]
    assert {d.find("target").get("bus") for d in disks} == {"virtio"}  # type: ignore[union-attr]
    assert [d.find("driver").get("type") for d in disks] == ["qcow2", "raw", "raw"]  # type: ignore[union-attr]
    assert {d.find("driver").get("cache") for d in disks} == {"unsafe"}  # type: ignore[union-attr]
    assert [d.find("readonly") is not None for d in disks] == [False, True, True]


def test_direct_kernel_boot() -> None:
    os_el = parse(config()).find("os")
    assert os_el is not None
    assert os_el.findtext("kernel") == str(KERNEL.kernel)
    assert os_el.findtext("initrd") == str(KERNEL.initrd)
    assert os_el.findtext("cmdline") == KERNEL.cmdline
    assert os_el.find("loader") is None


def test_uefi_and_bios_boot_the_first_disk() -> None:
    uefi = parse(config(kernel=None, firmware="uefi")).find("os")
    assert uefi is not None and uefi.find("kernel") is None
    loader = uefi.find("loader")
    assert loader is not None and loader.text == str(OVMF_CODE)
    assert (loader.get("readonly"), loader.get("type")) == ("yes", "pflash")
    nvram = uefi.find("nvram")
    assert nvram is not None and nvram.get("template") == str(OVMF_VARS)
    assert nvram.text == "/run/m1/OVMF_VARS.fd"
    bios = parse(config(kernel=None, firmware="bios")).find("os")
    assert bios is not None and bios.find("loader") is None
    assert bios.find("boot").get("dev") == "hd"  # type: ignore[union-attr]


def test_fw_cfg_entries() -> None:
    entries = parse(config()).findall("sysinfo[@type='fwcfg']/entry")
    assert [(e.get("name"), e.get("file")) for e in entries] == [
        ("opt/org.sysext-harness/ssh-key", "/run/ssh/id.pub")]
    assert parse(config(fw_cfg={})).find("sysinfo") is None


def test_serial_console_appends_to_a_file() -> None:
    serial = parse(config()).find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    source = serial.find("source")
    assert source is not None
    assert (source.get("path"), source.get("append")) == ("/run/m1/console.log", "on")


def test_ssh_port_forward_on_loopback_passed_through_to_qemu() -> None:
    """libvirt 9.0 has no passt backend: QEMU's own -netdev user, as the QEMU backend."""
    dom = parse(config(), port=40123)
    args = [a.get("value") for a in dom.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args == ["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:40123-:22",
                    "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC},addr=0x10"]
    assert forwarded_port(ET.tostring(dom, encoding="unicode")) == 40123
    assert dom.find("devices/interface") is None  # libvirt knows no NIC of its own


def test_no_default_devices() -> None:
    devices = parse(config()).find("devices")
    assert devices is not None
    assert devices.find("controller[@type='usb']").get("model") == "none"  # type: ignore[union-attr]
    assert devices.find("memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert devices.find("graphics") is None


def test_metadata_names_the_owning_process() -> None:
    xml = domain_xml(config(), name="n", console=Path("/c"), ssh_port=1, nvram=Path("/n"),
                     owner=OWNER)
    assert Owner.from_domain_xml(xml) == OWNER
    assert ET.fromstring(xml).find(f"metadata/{{{METADATA_NS}}}run") is not None
    assert Owner.from_domain_xml("<domain><name>other</name></domain>") is None


def test_restore_xml_keeps_the_guest_abi_and_takes_the_new_host_side() -> None:
    saved = ET.fromstring(domain_xml(config(), name="sysext-harness-4242-1",
                                     console=Path("/run/boot/console.log"), ssh_port=1111,
                                     nvram=Path("/run/boot/OVMF_VARS.fd"), owner=OWNER))
    ET.SubElement(saved, "uuid").text = "c7a5fdbd-cdaf-9455-926a-d65c16db1809"
    ET.SubElement(saved.find("devices/disk"), "address", type="pci", slot="0x04")  # type: ignore[arg-type]
    new_root = Drive(Path("/run/m2/root.qcow2"), "qcow2")
    new_owner = Owner("host-a", 5151, "888")
    new = domain_xml(config(drives=(new_root, USR_A, USR_B)), name="sysext-harness-5151-2",
                     console=Path("/run/m2/console.log"), ssh_port=2222,
                     nvram=Path("/run/m2/OVMF_VARS.fd"), owner=new_owner)
    out = ET.fromstring(restore_xml(ET.tostring(saved, encoding="unicode"), new))
    assert out.findtext("uuid") == "c7a5fdbd-cdaf-9455-926a-d65c16db1809"
    assert out.find("devices/disk/address") is not None
    assert [s.get("file") for s in out.findall("devices/disk/source")] == [
        "/run/m2/root.qcow2", str(USR_A.path), str(USR_B.path)]
    assert out.find("devices/serial/source").get("path") == "/run/m2/console.log"  # type: ignore[union-attr]
    assert forwarded_port(ET.tostring(out, encoding="unicode")) == 2222
    assert len(out.findall(f"{{{QEMU_NS}}}commandline")) == 1
    assert Owner.from_domain_xml(ET.tostring(out, encoding="unicode")) == new_owner


class FakeDomain:
    def __init__(self, name: str, xml: str) -> None:
        self._name = name
        self._xml = xml
        self.destroyed = False

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int) -> str:  # noqa: N802 - libvirt's name
        return self._xml

    def destroy(self) -> None:
        self.destroyed = True


class FakeConnection:
    def __init__(self, domains: list[FakeDomain]) -> None:
        self.domains = domains

    def listAllDomains(self, flags: int) -> list[FakeDomain]:  # noqa: N802 - libvirt's name
        return self.domains


def ours(name: str, owner: Owner) -> FakeDomain:
    return FakeDomain(name, domain_xml(config(), name=name, console=Path("/c"), ssh_port=1,
                                       nvram=Path("/n"), owner=owner))


def test_sweep_destroys_only_our_domains_of_dead_owners() -> None:
    dead, live = Owner("h", 1, "10"), Owner("h", 2, "20")
    stale = ours("sysext-harness-1-1", dead)
    running = ours("sysext-harness-2-1", live)
    foreign = FakeDomain("someone-elses-vm", "<domain><name>someone-elses-vm</name></domain>")
    unmarked = FakeDomain("sysext-harness-9-9", "<domain><name>x</name></domain>")
    removed = sweep_stale_domains(FakeConnection([stale, running, foreign, unmarked]),
                                  alive=lambda owner: owner == live)
    assert removed == ["sysext-harness-1-1"]
    assert (stale.destroyed, running.destroyed, foreign.destroyed, unmarked.destroyed) == (
        True, False, False, False)


def test_sweep_survives_a_domain_that_vanished() -> None:
    class Gone(FakeDomain):
        def destroy(self) -> None:
            raise RuntimeError("Domain not found")

    gone = Gone("sysext-harness-1-1", ours("x", Owner("h", 1, "1"))._xml)
    assert sweep_stale_domains(FakeConnection([gone]), alive=lambda owner: False) == []


def test_owner_alive_compares_pid_and_start_time() -> None:
    me = Owner.me()
    assert me.alive()
    assert me.start == process_start_time(me.pid)
    assert not Owner(me.host, me.pid, "1").alive()  # the pid was reused by another process
    assert Owner("another-host", 1, "1").alive()  # not ours to judge


def test_select_backend() -> None:
    assert isinstance(select_backend("qemu"), QemuBackend)
    with pytest.raises(ConfigError, match="unknown machine backend"):
        select_backend("xen")
