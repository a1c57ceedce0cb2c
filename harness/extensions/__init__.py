"""Extension specs and the builder that turns them into sysext/confext artifacts."""

from harness.extensions.build import (
    BUILDER_VERSION,
    Artifact,
    artifact_filename,
    build_extension,
    default_cache_dir,
    prebuilt_digest,
    spec_digest,
)
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
