"""The scenario's `provisioning:` block: first-boot config as users write it.

A scenario gives Butane (rendered to Ignition for Flatcar and Fedora CoreOS personas) or a
Kairos `#cloud-config`, inline or from a file next to the scenario. Placeholders refer to
the scenario's extensions as the harness serves them to the guest over HTTP:

    {{ url:NAME }}     http://10.0.2.2:PORT/<file name> (the guest's view of the host)
    {{ sha512:NAME }}  hex SHA-512 of the built image (for `verification.hash: sha512-...`)
    {{ sha256:NAME }}  hex SHA-256
    {{ file:NAME }}    the image's file name (for Butane `contents.local`)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

KINDS = {"butane": "ignition", "butane_file": "ignition",
         "cloud_config": "cloud-config", "cloud_config_file": "cloud-config"}
KEYS = (*KINDS, "serve", "expect_failure")
PLACEHOLDER = re.compile(r"\{\{\s*(url|sha512|sha256|file)\s*:\s*([A-Za-z0-9_.+-]+)\s*\}\}")


@dataclass(frozen=True)
class Provisioning:
    kind: str  # "ignition" or "cloud-config": must match the target persona's channel
    text: str  # Butane YAML or #cloud-config text, placeholders not yet filled in
    source: Path  # where the text came from (for error messages)
    serve: tuple[str, ...]  # extensions served over HTTP for the guest to fetch
    expect_failure: str | None = None  # provisioning must fail with this text in the reason

    @property
    def tool(self) -> str:
        return "Ignition" if self.kind == "ignition" else "cloud-config"


def placeholders(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)]


def fill(text: str, values: dict[tuple[str, str], str]) -> str:
    return PLACEHOLDER.sub(lambda m: values[(m.group(1), m.group(2))], text)


def parse_provisioning(ctx, key: str, value: object, scenario_path: Path,  # type: ignore[no-untyped-def]
                       extension_names: list[str]) -> Provisioning | None:
    """Validate the block with the loader's context `ctx` (errors carry file:line and key)."""
    if not isinstance(value, dict):
        ctx.error(key, "provisioning must be a mapping", value, allowed=", ".join(KEYS))
        return None
    for k in value:
        if k not in KEYS:
            ctx.error(f"{key}.{k}", "unknown key", k, allowed=KEYS)
    given = [k for k in KINDS if k in value]
    if len(given) != 1:
        ctx.error(key, "give exactly one of butane, butane_file, cloud_config, "
                  "cloud_config_file", given or None, allowed=", ".join(KINDS))
        return None
    which = given[0]
    raw = value[which]
    source = scenario_path
    if which.endswith("_file"):
        if not isinstance(raw, str) or not raw:
            ctx.error(f"{key}.{which}", "expected a file path", raw)
            return None
        source = (scenario_path.parent / raw).resolve()
        if not source.is_file():
            ctx.error(f"{key}.{which}", "file not found", str(source))
            return None
        text = source.read_text()
    elif isinstance(raw, str):
        text = raw
    elif isinstance(raw, dict):
        text = yaml.safe_dump(raw, sort_keys=False)
        if which == "cloud_config":
            text = "#cloud-config\n" + text
    else:
        ctx.error(f"{key}.{which}", "expected YAML text or a mapping", raw)
        return None

    for kind, name in placeholders(text):
        if name not in extension_names:
            ctx.error(f"{key}.{which}", f"placeholder {{{{ {kind}:{name} }}}} names an unknown "
                      "extension", name, allowed=extension_names or "(no extensions declared)")

    serve = value.get("serve", list(extension_names))
    if not isinstance(serve, list) or not all(isinstance(s, str) for s in serve):
        ctx.error(f"{key}.serve", "expected a list of extension names", serve)
        serve = []
    for i, name in enumerate(serve):
        if name not in extension_names:
            ctx.error(f"{key}.serve[{i}]", "unknown extension", name, allowed=extension_names)
    expect_failure = value.get("expect_failure")
    if expect_failure is not None and (not isinstance(expect_failure, str) or not expect_failure):
        ctx.error(f"{key}.expect_failure", "expected the text the failure reason must contain",
                  expect_failure)
    return Provisioning(kind=KINDS[which], text=text, source=source, serve=tuple(serve),
                        expect_failure=expect_failure)
