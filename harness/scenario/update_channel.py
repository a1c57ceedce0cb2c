"""The scenario's `update_channel:` block: a systemd-sysupdate channel served by the host.

    update_channel:
      layout: bakery              # or fedora-sysexts
      signed: true                # SHA256SUMS.gpg with the run's key; default false
      components:
        hello:                    # component = image name: hello-@v-%a.raw
          extension: hello        # the `extensions:` entry built; default: the component
          versions: [1.0.0, 1.1.0]
          architectures: [host, arm64]
          os: [current, next]     # fedora-sysexts: builds for VERSION_ID of slot A, B
          transfer: {Target.InstancesMax: 2, Transfer.Verify: "yes"}

Validated like the rest of a scenario (file:line, key path, allowed values).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from harness.sysupdate.model import HOST_ARCH, LAYOUTS, OS_SLOT_WORDS, ChannelSpec, Component
from harness.sysupdate.transfer import SECTIONS

KEYS = ("layout", "signed", "components")
COMPONENT_KEYS = ("extension", "versions", "architectures", "os", "transfer")
# systemd's architecture names (the ones a sysupdate %a expands to on common machines).
ARCHITECTURES = (HOST_ARCH, "x86-64", "x86", "arm64", "arm", "riscv64", "ppc64-le", "s390x")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~^_]*$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*$")
_TRANSFER_KEY_RE = re.compile(rf"^({'|'.join(SECTIONS)})\.[A-Z][A-Za-z]*$")


def _scalar(value: object) -> str | None:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _strings(ctx: Any, key: str, value: object, check: Any, what: str) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value:
        ctx.error(key, f"must be a non-empty list of {what}", value)
        return None
    out = []
    for i, item in enumerate(value):
        text = _scalar(item)
        if text is None or not check(text):
            ctx.error(f"{key}[{i}]", f"not a valid {what[:-1] if what.endswith('s') else what}",
                      item, allowed=_ALLOWED[what])
            return None
        out.append(text)
    if len(set(out)) != len(out):
        ctx.error(key, "lists an entry twice", value)
        return None
    return tuple(out)


_ALLOWED = {
    "versions": "version strings such as 1.2.0 (letters, digits, . + ~ ^ _)",
    "architectures": ", ".join(ARCHITECTURES),
    "os": f"{', '.join(OS_SLOT_WORDS)} (VERSION_ID of /usr slot A or B), or a literal VERSION_ID",
}


def _known_keys(ctx: Any, key: str, value: object, allowed: tuple[str, ...],
                what: str) -> bool | None:
    """None when `value` is no mapping; else whether all its keys are in `allowed`."""
    if not isinstance(value, dict):
        ctx.error(key, f"{what} must be a mapping", value, allowed=", ".join(allowed))
        return None
    ok = True
    for k in value:
        if k not in allowed:
            ctx.error(f"{key}.{k}", "unknown key", k, allowed=allowed)
            ok = False
    return ok


def _component(ctx: Any, key: str, name: str, value: object,
               extension_names: list[str]) -> Component | None:
    if value is None:
        value = {}
    ok = _known_keys(ctx, key, value, COMPONENT_KEYS, "a component")
    if ok is None:
        return None
    assert isinstance(value, dict)
    extension = value.get("extension", name)
    if extension not in extension_names:
        ctx.error(f"{key}.extension", "names no extension under `extensions:`", extension,
                  allowed=extension_names or "(no extensions declared)")
        ok = False
    versions = _strings(ctx, f"{key}.versions", value.get("versions"),
                        _VERSION_RE.match, "versions")
    architectures = _strings(ctx, f"{key}.architectures",
                             value.get("architectures", [HOST_ARCH]),
                             lambda a: a in ARCHITECTURES, "architectures")
    os_words = _strings(ctx, f"{key}.os", value.get("os", ["current"]),
                        _VERSION_RE.match, "os")
    transfer: dict[str, str] = {}
    raw_transfer = value.get("transfer", {})
    if not isinstance(raw_transfer, dict):
        ctx.error(f"{key}.transfer", "must be a mapping of Section.Key to value", raw_transfer,
                  allowed="e.g. {Target.InstancesMax: 2, Transfer.Verify: \"yes\"}")
        ok = False
    else:
        for k, v in raw_transfer.items():
            text = _scalar(v) if v is not None else ""
            if not isinstance(k, str) or not _TRANSFER_KEY_RE.match(k) or text is None:
                ctx.error(f"{key}.transfer.{k}", "not a transfer setting", v,
                          allowed=f"Section.Key with Section one of {', '.join(SECTIONS)}, "
                          "a scalar value (empty: remove the key)")
                ok = False
            else:
                transfer[k] = text
    if not ok or versions is None or architectures is None or os_words is None:
        return None
    return Component(name=name, extension=extension, versions=versions,
                     architectures=architectures, os=os_words,
                     transfer=MappingProxyType(transfer))


def parse_update_channel(ctx: Any, key: str, value: object,
                         extension_names: list[str]) -> ChannelSpec | None:
    ok = _known_keys(ctx, key, value, KEYS, "update_channel")
    if ok is None:
        return None
    assert isinstance(value, dict)
    layout = value.get("layout")
    if layout not in LAYOUTS:
        ctx.error(f"{key}.layout", "unknown layout" if layout else "missing required key",
                  layout, allowed=LAYOUTS)
        ok = False
    signed = value.get("signed", False)
    if not isinstance(signed, bool):
        ctx.error(f"{key}.signed", "must be true or false", signed, allowed="true, false")
        ok = False
    raw_components = value.get("components")
    components: dict[str, Component] = {}
    if not isinstance(raw_components, dict) or not raw_components:
        ctx.error(f"{key}.components", "must be a non-empty mapping of component names",
                  raw_components, allowed="e.g. {hello: {versions: [1.0.0]}}")
        return None
    for name, raw in raw_components.items():
        ckey = f"{key}.components.{name}"
        if not isinstance(name, str) or not _COMPONENT_RE.match(name):
            ctx.error(ckey, "invalid component name", name,
                      allowed="letters, digits, '_', '+', '-' (it becomes NAME-@v-%a.raw)")
            ok = False
            continue
        component = _component(ctx, ckey, name, raw, extension_names)
        if component is None:
            ok = False
        else:
            components[name] = component
    if not ok:
        return None
    assert isinstance(layout, str)
    if layout != "fedora-sysexts":
        for name, component in components.items():
            if component.os != ("current",):
                ctx.error(f"{key}.components.{name}.os", "only fedora-sysexts file names carry "
                          "the OS version (%w)", list(component.os), allowed="omit it")
                return None
    return ChannelSpec(layout=layout, signed=signed,
                       components=MappingProxyType(components))
