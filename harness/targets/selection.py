"""Which targets a run is about: reference targets by name or glob, image targets by their
YAML file, or one disk image given on the command line (`--image PATH --persona NAME`)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from harness.targets.image_target import load_target_file, target_from_image
from harness.targets.model import Target
from harness.targets.registry import select_targets as select_reference_targets

TARGET_FILE_SUFFIXES = (".yaml", ".yml")


def is_target_file(pattern: str) -> bool:
    return pattern.endswith(TARGET_FILE_SUFFIXES)


def select_targets(patterns: list[str] | None, *, image: str | None = None,
                   persona: str | None = None, firmware: str = "uefi") -> list[Target]:
    """Targets named by `patterns` (comma-separated globs of reference targets, or paths of
    target files) plus the `image` if given; every default reference target when nothing
    is named. Image targets come without facts: `harness.machine.probe.resolve` adds them.
    """
    if image is None and persona is not None:
        raise ConfigError("--persona names the distribution of an --image; give the image",
                          key="--persona", value=persona)
    names: list[str] = []
    targets: list[Target] = []
    for raw in patterns or []:
        for pattern in filter(None, (p.strip() for p in raw.split(","))):
            if is_target_file(pattern):
                targets.append(load_target_file(Path(pattern)))
            else:
                names.append(pattern)
    if image is not None:
        if persona is None:
            raise ConfigError("an --image needs --persona to say which distribution it is",
                              key="--persona", allowed=("flatcar", "fcos", "kairos"))
        targets.append(target_from_image(image, persona, firmware))
    if names or not targets:
        targets = select_reference_targets(names or None) + targets
    seen: set[str] = set()
    for t in targets:
        if t.name in seen:
            raise ConfigError("two targets have the same name", key="--target", value=t.name)
        seen.add(t.name)
    return targets
