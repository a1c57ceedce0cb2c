"""Turn a scenario's provisioning into what a cold boot needs: fw_cfg entries or a seed disk.

Ignition personas: Butane is rendered to Ignition (refused, exit 2 style, if invalid), the
harness's SSH key is added for the user it logs in as (root on reference images, the
distribution's user on image targets) and nothing else, and the JSON goes to fw_cfg under the
persona's name. Kairos: the cloud-config gets the key and goes on a `cidata` seed ISO.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from harness.extensions.model import Artifact
from harness.provisioning.http import ArtifactServer
from harness.scenario.provisioning import Provisioning, fill, placeholders
from harness.targets.boot import Drive
from harness.targets.model import Target

SSH_USER = "root"  # reference images: the harness logs in as root


@dataclass
class BootInputs:
    fw_cfg: dict[str, Path] = field(default_factory=dict)
    drives: list[Drive] = field(default_factory=list)
    rendered: Path | None = None  # the config the guest got, kept with the artifacts


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_served(provisioning: Provisioning, artifacts: Mapping[str, Artifact],
                 directory: Path) -> None:
    """Place the served images in `directory` under their file names (hard links if possible)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in provisioning.serve:
        artifact = artifacts[name]
        if artifact.path.is_dir():
            raise ConfigError("only image files can be served, not directory extensions",
                              file=provisioning.source, key="provisioning.serve", value=name)
        dest = directory / artifact.filename
        if dest.exists():
            continue
        try:
            os.link(artifact.path, dest)
        except OSError:
            shutil.copy2(artifact.path, dest)


def placeholder_values(provisioning: Provisioning, artifacts: Mapping[str, Artifact],
                       server: ArtifactServer) -> dict[tuple[str, str], str]:
    values: dict[tuple[str, str], str] = {}
    for kind, name in placeholders(provisioning.text):
        artifact = artifacts[name]
        if kind == "url":
            values[(kind, name)] = server.guest_url(artifact.filename)
        elif kind == "file":
            values[(kind, name)] = artifact.filename
        else:
            values[(kind, name)] = _digest(artifact.path, kind)
    return values


def prepare_boot(provisioning: Provisioning, target: Target, artifacts: Mapping[str, Artifact],
                 server: ArtifactServer, pubkey: str, out: Path, user: str = SSH_USER
                 ) -> BootInputs:
    """Render and validate the config for `target`; write it to `out` for the record.
    `user` is who the harness logs in as: the config gives that user the key."""
    text = fill(provisioning.text, placeholder_values(provisioning, artifacts, server))
    if provisioning.kind == "ignition":
        return _ignition(provisioning, target, text, server.directory, pubkey, out, user)
    return _cloud_config(provisioning, text, pubkey, out, user)


def _ignition(provisioning: Provisioning, target: Target, text: str, files_dir: Path,
              pubkey: str, out: Path, user: str) -> BootInputs:
    from harness.config.butane import render_butane
    from harness.config.ignition import add_ssh_key, to_json

    if not target.persona.ignition_fw_cfg_name:
        raise ConfigError(f"persona {target.persona.name} takes no Ignition config",
                          file=provisioning.source, key="provisioning")
    (out / "provisioning.bu").write_text(text)
    rendered = render_butane(text, source=provisioning.source, files_dir=files_dir)
    for warning in rendered.warnings:
        (out / "provisioning-warnings.txt").open("a").write(
            f"{warning.path}: {warning.message}\n")
    config = add_ssh_key(rendered.ignition, user, pubkey)
    path = out / "config.ign"
    path.write_text(to_json(config))
    return BootInputs(fw_cfg={target.persona.ignition_fw_cfg_name: path}, rendered=path)


def _cloud_config(provisioning: Provisioning, text: str, pubkey: str, out: Path, user: str
                  ) -> BootInputs:
    from harness.config.cloudconfig import (
        add_ssh_key,
        make_seed_iso,
        render_cloud_config,
        validate_cloud_config,
    )

    config = validate_cloud_config(text, source=str(provisioning.source))
    config = add_ssh_key(config, user, pubkey)
    user_data = out / "user-data"
    user_data.write_text(render_cloud_config(config))
    seed = make_seed_iso(user_data.read_text(), out / "seed.iso")
    return BootInputs(drives=[Drive(seed, "raw", readonly=True)], rendered=user_data)


def describe(inputs: BootInputs) -> str:
    return json.dumps({"fw_cfg": {k: str(v) for k, v in inputs.fw_cfg.items()},
                       "drives": [str(d.path) for d in inputs.drives]})
