"""Transfer files for the guest, written the way each layout's publisher writes them.

The text follows flatcar/sysext-bakery's `lib/sysupdate.conf.tmpl` and fedora-sysexts'
`systemd-sysupdate.conf` template; only the source URL points at the harness's server.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from harness.sysupdate.model import ChannelSpec, Component

# systemd 257 introduced the `.transfer` suffix; older versions read only `*.conf`
# (sysext-behaviour reference §9.1).
TRANSFER_SUFFIX_SINCE = 257
SECTIONS: tuple[str, ...] = ("Transfer", "Source", "Target")


@dataclass(frozen=True)
class GuestFile:
    path: str
    text: str


def transfer_settings(channel: ChannelSpec, component: Component,
                      base_url: str) -> dict[str, dict[str, str]]:
    """Section -> key -> value, before the scenario's overrides."""
    name = component.name
    source_url = f"{base_url.rstrip('/')}/{channel.directory(name)}/"
    if channel.layout == "bakery":
        pattern = f"{name}-@v-%a.raw"
        target = {"InstancesMax": "3", "Type": "regular-file",
                  "Path": f"/opt/extensions/{name}",
                  "CurrentSymlink": f"/etc/extensions/{name}.raw"}
    else:
        pattern = f"{name}-@v-%w-%a.raw"
        target = {"InstancesMax": "2", "Type": "regular-file",
                  "Path": "/var/lib/extensions.d/", "MatchPattern": pattern,
                  "CurrentSymlink": f"/var/lib/extensions/{name}.raw"}
    return {
        # Both publishers ship Verify=false; a signed channel is verified.
        "Transfer": {"Verify": "true" if channel.signed else "false"},
        "Source": {"Type": "url-file", "Path": source_url, "MatchPattern": pattern},
        "Target": target,
    }


def apply_overrides(settings: dict[str, dict[str, str]],
                    overrides: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """`Section.Key: value` overrides; an empty value removes the key."""
    out = {section: dict(keys) for section, keys in settings.items()}
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        keys = out.setdefault(section, {})
        if value == "":
            keys.pop(key, None)
        else:
            keys[key] = value
    return out


def render_transfer(settings: Mapping[str, Mapping[str, str]]) -> str:
    blocks = []
    for section in SECTIONS:
        keys = settings.get(section)
        if keys:
            blocks.append(f"[{section}]\n" + "".join(f"{k}={v}\n" for k, v in keys.items()))
    return "\n".join(blocks)


def transfer_file(channel: ChannelSpec, component: Component, base_url: str,
                  systemd_version: int) -> GuestFile:
    """`/etc/sysupdate.NAME.d/NAME.transfer` (`.conf` before systemd 257)."""
    settings = apply_overrides(transfer_settings(channel, component, base_url),
                               component.transfer)
    suffix = "transfer" if systemd_version >= TRANSFER_SUFFIX_SINCE else "conf"
    name = component.name
    return GuestFile(f"/etc/sysupdate.{name}.d/{name}.{suffix}", render_transfer(settings))


def target_directories(channel: ChannelSpec, component: Component) -> list[str]:
    """Where sysupdate puts the images and the current link. The harness creates both, as
    provisioning does (sysext-bakery's Butane writes /etc/extensions/NAME.raw): systemd
    254 does not create the link's directory (observed on the Kairos persona, which has
    no /etc/extensions)."""
    settings = apply_overrides(transfer_settings(channel, component, "http://x/"),
                               component.transfer)["Target"]
    dirs = [settings["Path"]]
    link = settings.get("CurrentSymlink")
    if link:
        dirs.append(posixpath.dirname(link))
    return dirs


def noop_transfer() -> GuestFile:
    """sysext-bakery tells users to add /etc/sysupdate.d/noop.conf, so that
    systemd-sysupdate.service (which reads only sysupdate.d/) finds a definition."""
    text = render_transfer({
        "Source": {"Type": "regular-file", "Path": "/",
                   "MatchPattern": "invalid@v.raw"},
        "Target": {"Type": "regular-file", "Path": "/"},
    })
    return GuestFile("/etc/sysupdate.d/noop.conf", text)
