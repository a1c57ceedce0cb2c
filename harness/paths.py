"""Where things live: the project's recipes, the user's cache, per-run scratch space."""

from __future__ import annotations

import os
from pathlib import Path

import harness


def project_root() -> Path:
    """The checkout the harness runs from (recipes in images/, suites in scenarios/)."""
    env = os.environ.get("SYSEXT_HARNESS_ROOT")
    if env:
        return Path(env)
    return Path(harness.__file__).resolve().parent.parent


def images_dir() -> Path:
    return project_root() / "images"


def cache_dir() -> Path:
    """Outside the clone so later runs (and fresh clones) reuse built roots and images."""
    env = os.environ.get("SYSEXT_HARNESS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "sysext-harness"
