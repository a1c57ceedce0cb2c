"""Update channels: transfer files, the `update_channel:` block, and the host side of a
channel built with the real mksquashfs and signed with the real gpg. No VMs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from harness.errors import ConfigErrors
from harness.extensions import build_extension, parse_extension_spec
from harness.extensions.spec import ExtensionSpec
from harness.scenario import load_scenario
from harness.scenario.model import ChannelStep, SysupdateStep
from harness.sysupdate.channel import UpdateChannel, build_variant
from harness.sysupdate.model import ChannelSpec, Component
from harness.sysupdate.signing import SigningKey
from harness.sysupdate.transfer import noop_transfer, target_directories, transfer_file
from harness.targets.registry import get_target

URL = "http://10.0.2.2:8080/"


def channel(layout: str, signed: bool = False, **component: object) -> ChannelSpec:
    comp = Component(name="hello", extension="hello",
                     **{"versions": ("1.0.0",), **component})  # type: ignore[arg-type]
    return ChannelSpec(layout=layout, signed=signed,
                       components=MappingProxyType({"hello": comp}))


# ---------------------------------------------------------------------------- transfer


def test_bakery_transfer_file_is_the_bakery_template() -> None:
    spec = channel("bakery")
    f = transfer_file(spec, spec.components["hello"], URL, 257)
    assert f.path == "/etc/sysupdate.hello.d/hello.transfer"
    assert f.text == textwrap.dedent("""\
        [Transfer]
        Verify=false

        [Source]
        Type=url-file
        Path=http://10.0.2.2:8080/extensions/
        MatchPattern=hello-@v-%a.raw

        [Target]
        InstancesMax=3
        Type=regular-file
        Path=/opt/extensions/hello
        CurrentSymlink=/etc/extensions/hello.raw
        """)


def test_fedora_transfer_file_and_conf_suffix_before_257() -> None:
    spec = channel("fedora-sysexts")
    f = transfer_file(spec, spec.components["hello"], URL, 254)
    assert f.path == "/etc/sysupdate.hello.d/hello.conf"
    assert "Path=http://10.0.2.2:8080/extensions/hello/\n" in f.text
    assert f.text.count("MatchPattern=hello-@v-%w-%a.raw\n") == 2
    assert "CurrentSymlink=/var/lib/extensions/hello.raw\n" in f.text
    assert "InstancesMax=2\n" in f.text
    assert target_directories(spec, spec.components["hello"]) == [
        "/var/lib/extensions.d/", "/var/lib/extensions"]


def test_signed_channel_verifies_and_overrides_apply() -> None:
    spec = channel("bakery", signed=True,
                   transfer=MappingProxyType({"Target.InstancesMax": "2",
                                              "Target.CurrentSymlink": "",
                                              "Transfer.ProtectVersion": "%A"}))
    text = transfer_file(spec, spec.components["hello"], URL, 262).text
    assert "Verify=true\n" in text and "InstancesMax=2\n" in text
    assert "CurrentSymlink" not in text
    assert "ProtectVersion=%A\n" in text


def test_noop_transfer_matches_nothing() -> None:
    noop = noop_transfer()
    assert noop.path == "/etc/sysupdate.d/noop.conf"
    assert "MatchPattern=invalid@v.raw" in noop.text


# ------------------------------------------------------------------- scenario block

HELLO = """\
description: d
extensions:
  hello:
    release: {ID: _any}
    files: [{path: /usr/share/hello, content: "x"}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_update_channel_block_and_steps(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, HELLO + """\
update_channel:
  layout: fedora-sysexts
  signed: true
  components:
    hello:
      versions: [1.0.0, 2]
      architectures: [host, arm64]
      os: [current, next, "42"]
      transfer: {Target.InstancesMax: 2, Transfer.Verify: true}
steps:
  - sysupdate: -C hello update
    expect: {exit: 0}
  - publish: {component: hello, version: 1.1.0}
  - tamper: {component: hello, version: 1.1.0}
"""))
    assert s.update_channel is not None
    comp = s.update_channel.components["hello"]
    assert comp.versions == ("1.0.0", "2")
    assert comp.os == ("current", "next", "42")
    assert dict(comp.transfer) == {"Target.InstancesMax": "2", "Transfer.Verify": "yes"}
    step = s.steps[0]
    assert isinstance(step, SysupdateStep)
    assert step.command == "/usr/lib/systemd/systemd-sysupdate -C hello update"
    assert isinstance(s.steps[2], ChannelStep) and s.steps[2].verb == "tamper"


@pytest.mark.parametrize(("block", "key", "words"), [
    ("layout: nix\n  components: {hello: {versions: [1]}}", "update_channel.layout",
     "bakery, fedora-sysexts"),
    ("layout: bakery\n  components: {hello: {versions: [1], os: [next]}}",
     "update_channel.components.hello.os", "%w"),
    ("layout: bakery\n  components: {hi: {versions: [1]}}",
     "update_channel.components.hi.extension", "hello"),
    ("layout: bakery\n  components: {hello: {versions: []}}",
     "update_channel.components.hello.versions", "non-empty"),
    ("layout: bakery\n  components: {hello: {versions: [1], architectures: [amd64]}}",
     "update_channel.components.hello.architectures[0]", "x86-64"),
    ("layout: bakery\n  components: {hello: {versions: [1], transfer: {Verify: no}}}",
     "update_channel.components.hello.transfer.Verify", "Section.Key"),
    ("layout: bakery\n  signed: maybe\n  components: {hello: {versions: [1]}}",
     "update_channel.signed", "true, false"),
])
def test_update_channel_errors(tmp_path: Path, block: str, key: str, words: str) -> None:
    path = write(tmp_path, HELLO + f"update_channel:\n  {block}\nsteps: [merge]\n")
    with pytest.raises(ConfigErrors) as exc:
        load_scenario(path)
    text = str(exc.value)
    assert key in text and words in text
    assert f"{path}:" in text


def test_channel_steps_need_a_channel_and_a_known_component(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="needs an `update_channel:` block"):
        load_scenario(write(tmp_path, HELLO + "steps:\n  - publish: {component: hello, "
                            "version: 1}\n"))
    with pytest.raises(ConfigErrors, match="not a component of update_channel"):
        load_scenario(write(tmp_path, HELLO + "update_channel: {layout: bakery, components: "
                            "{hello: {versions: [1]}}}\nsteps:\n  - tamper: {component: x, "
                            "version: 1}\n"))


def test_channel_images_must_be_sysext_images(tmp_path: Path) -> None:
    text = HELLO.replace("release: {ID: _any}", "format: directory")
    with pytest.raises(ConfigErrors, match="format squashfs or erofs"):
        load_scenario(write(tmp_path, text + "update_channel: {layout: bakery, components: "
                            "{hello: {versions: [1]}}}\nsteps: [merge]\n"))


def test_sysupdate_scenarios_are_not_applicable_without_sysupdate() -> None:
    from harness.scenario.applicability import applicability
    s = load_scenario(Path(__file__).parents[2] / "scenarios/sysupdate/components-update.yaml")
    ok, reason = applicability(s, get_target("refos-252-flatcar"))
    assert not ok and "does not ship" in reason and "252" in reason
    assert applicability(s, get_target("refos-257-flatcar")) == (True, "")


def test_sysupdate_step_without_a_channel_takes_env_and_needs_sysupdate(tmp_path: Path) -> None:
    from harness.scenario.applicability import applicability
    s = load_scenario(write(tmp_path, "description: d\nsteps:\n  - sysupdate: --verify=no update\n"
                            "    env: {SYSTEMD_SYSUPDATE_VERIFY_FRESHNESS: 0}\n"))
    step = s.steps[0]
    assert isinstance(step, SysupdateStep) and s.update_channel is None and s.uses_sysupdate
    assert step.command == ("SYSTEMD_SYSUPDATE_VERIFY_FRESHNESS=0 "
                            "/usr/lib/systemd/systemd-sysupdate --verify=no update")
    ok, reason = applicability(s, get_target("refos-252-flatcar"))
    assert not ok and "does not ship" in reason
    with pytest.raises(ConfigErrors, match="not an environment variable name"):
        load_scenario(write(tmp_path, "description: d\nsteps:\n  - sysupdate: update\n"
                            "    env: {1X: y}\n"))


# ------------------------------------------------------------------------ host side

needs_tools = pytest.mark.skipif(
    not (shutil.which("mksquashfs") and shutil.which("unsquashfs") and shutil.which("gpg")),
    reason="squashfs-tools or gpg not installed (make setup)",
)


def hello_spec() -> ExtensionSpec:
    return parse_extension_spec("hello", {
        "release": {"ID": "host", "VERSION_ID": "host"},
        "files": [{"path": "/usr/share/hello/marker", "content": "x\n"}],
    }, source=None, key_prefix="extensions.hello")


def test_variant_is_named_after_component_and_pins_arch_and_os() -> None:
    comp = Component(name="hello", extension="base", versions=("1",))
    variant = build_variant(hello_spec(), comp, "1.2.0", "arm64", "43")
    assert variant.name == "hello"
    assert dict(variant.release or {}) == {"ID": "host", "VERSION_ID": "43",
                                           "ARCHITECTURE": "arm64"}
    marker = [f for f in variant.files if f.path == comp.marker_path()]
    assert marker and marker[0].content == "VERSION=1.2.0\nOS_VERSION_ID=43\nARCHITECTURE=arm64\n"


@needs_tools
def test_channel_publishes_signs_and_tampers(tmp_path: Path) -> None:
    target = get_target("refos-257-fcos")
    spec = channel("fedora-sysexts", signed=True, architectures=("host", "arm64"),
                   os=("current", "next"))
    cache = tmp_path / "cache"

    def build(s: ExtensionSpec):  # type: ignore[no-untyped-def]
        return build_extension(s, target.os_release, cache_dir=cache, target_label="t")

    key = SigningKey(tmp_path / "gnupg")
    try:
        ch = UpdateChannel(spec, {"hello": hello_spec()}, target, tmp_path / "root", build,
                           key=lambda: key)
        ch.publish_initial()
        directory = tmp_path / "root/extensions/hello"
        names = sorted(p.name for p in directory.glob("*.raw"))
        assert names == ["hello-1.0.0-42-arm64.raw", "hello-1.0.0-42-x86-64.raw",
                         "hello-1.0.0-43-arm64.raw", "hello-1.0.0-43-x86-64.raw"]
        # SHA256SUMS in sha256sum's own format, checked by sha256sum itself
        subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=directory,
                       check=True, capture_output=True)
        # the signature verifies against the exported public key, as sysupdate does it
        ring = tmp_path / "pubring.gpg"
        ring.write_bytes(key.public_keyring())
        subprocess.run(["gpgv", "--keyring", ring, "SHA256SUMS.gpg", "SHA256SUMS"],
                       cwd=directory, check=True, capture_output=True)
        release = subprocess.run(
            ["unsquashfs", "-cat", directory / "hello-1.0.0-43-x86-64.raw",
             "usr/lib/extension-release.d/extension-release.hello"],
            check=True, capture_output=True, text=True).stdout
        assert release == "ID=fedora\nVERSION_ID=43\nARCHITECTURE=x86-64\n"

        ch.publish("hello", "1.1.0")
        assert "hello-1.1.0-43-x86-64.raw" in (directory / "SHA256SUMS").read_text()
        cached = {p: hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in (cache / "extensions").rglob("*.raw")}
        ch.tamper("hello", "1.1.0")
        bad = subprocess.run(["sha256sum", "--check", "SHA256SUMS"], cwd=directory,
                             capture_output=True, text=True)
        assert bad.returncode == 1 and "hello-1.1.0-43-x86-64.raw: FAILED" in bad.stdout
        # the build cache is untouched (published files may be hard links into it)
        assert cached == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in cached}

        ch.base_url = URL
        files = dict(ch.guest_files())
        assert files["/etc/systemd/import-pubring.gpg"] == ring.read_bytes()
        assert "/etc/sysupdate.hello.d/hello.transfer" in files
        assert ch.guest_directories() == ["/var/lib/extensions", "/var/lib/extensions.d/"]
    finally:
        key.close()
    agents = subprocess.run(["pgrep", "-f", str(tmp_path / "gnupg")], capture_output=True)
    assert agents.returncode == 1, "gpg-agent outlived close()"
