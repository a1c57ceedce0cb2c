"""Extension specs and the builder that turns them into sysext/confext artifacts."""

from harness.buildcache import cache_dir as default_cache_dir
from harness.extensions.build import build_extension, prebuilt_digest
from harness.extensions.model import Artifact
from harness.extensions.spec import (
    DEFAULT_RELEASE,
    FORMATS,
    RELAXED_XATTR,
    TYPES,
    ExtensionSpec,
    FileEntry,
    FrozenMap,
    load_extension_spec_file,
    parse_extension_spec,
    render_release,
    resolve_release,
)
from harness.extensions.tree import BUILDER_VERSION, artifact_filename, spec_digest

__all__ = [
    "BUILDER_VERSION",
    "DEFAULT_RELEASE",
    "FORMATS",
    "RELAXED_XATTR",
    "TYPES",
    "Artifact",
    "ExtensionSpec",
    "FileEntry",
    "FrozenMap",
    "artifact_filename",
    "build_extension",
    "default_cache_dir",
    "load_extension_spec_file",
    "parse_extension_spec",
    "prebuilt_digest",
    "render_release",
    "resolve_release",
    "spec_digest",
]
