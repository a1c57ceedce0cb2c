"""Parsing and validation of extension specs, and resolution of `host` release values."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError, ConfigErrors
from harness.extensions import (
    DEFAULT_RELEASE,
    ExtensionSpec,
    FileEntry,
    load_extension_spec_file,
    parse_extension_spec,
    render_release,
    resolve_release,
)

PREFIX = "extensions.hello"
HOST = {"ID": "flatcar", "VERSION_ID": "4081.2.0", "SYSEXT_LEVEL": "1.0", "ID_LIKE": "coreos"}


def parse(data: object, name: str = "hello") -> ExtensionSpec:
    return parse_extension_spec(name, data, source="scenario.yaml", key_prefix=PREFIX)


def errors_of(data: object, name: str = "hello") -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        parse(data, name)
    err = info.value
    return list(err.errors) if isinstance(err, ConfigErrors) else [err]


def one_error(data: object, key: str) -> ConfigError:
    errs = errors_of(data)
    matching = [e for e in errs if e.key == key]
    assert matching, f"no error for {key}; got {[e.render() for e in errs]}"
    return matching[0]


# --------------------------------------------------------------------------- good specs


def test_full_spec() -> None:
    spec = parse(
        {
            "type": "sysext",
            "format": "erofs",
            "release": {"ID": "host", "VERSION_ID": 12, "SYSEXT_LEVEL": 1.0, "FOO": "bar"},
            "release_name": "other",
            "relaxed_release_name": True,
            "files": [
                {"path": "/usr/bin/hello", "content": "#!/bin/sh\n", "mode": "0755"},
                {"path": "/usr/lib/hello/link", "symlink": "../../bin/hello"},
                {"path": "/usr/share/hello/empty", "directory": True},
                {"path": "/opt/x", "content": "", "mode": 0o600},
            ],
            "units": {"hello.service": "[Service]\nExecStart=/usr/bin/hello\n"},
        }
    )
    assert spec.name == "hello"
    assert spec.format == "erofs"
    assert dict(spec.release or {}) == {
        "ID": "host",
        "VERSION_ID": "12",
        "SYSEXT_LEVEL": "1.0",
        "FOO": "bar",
    }
    assert spec.release_name == "other"
    assert spec.relaxed_release_name is True
    assert spec.files[0] == FileEntry("/usr/bin/hello", content="#!/bin/sh\n", mode=0o755)
    assert spec.files[1] == FileEntry("/usr/lib/hello/link", symlink="../../bin/hello")
    assert spec.files[2].directory and spec.files[2].effective_mode == 0o755
    assert spec.files[3].mode == 0o600
    assert spec.units == (("hello.service", "[Service]\nExecStart=/usr/bin/hello\n"),)
    assert spec.release_path == "/usr/lib/extension-release.d/extension-release.other"
    hash(spec)  # frozen specs are usable as dict keys


def test_defaults() -> None:
    spec = parse({})
    assert spec.type == "sysext"
    assert spec.format == "squashfs"
    assert spec.release == DEFAULT_RELEASE
    assert dict(spec.release) == {"ID": "host", "VERSION_ID": "host"}
    assert spec.files == () and spec.units == ()
    assert spec.image is None
    assert parse(None) == spec  # `extensions: {hello: }` is an empty extension


def test_equal_specs_are_equal_and_hashable() -> None:
    a = parse({"release": {"ID": "_any"}, "files": [{"path": "/usr/a", "content": "x"}]})
    b = parse_extension_spec(
        "hello",
        {"release": {"ID": "_any"}, "files": [{"path": "/usr/a", "content": "x"}]},
        source="other.yaml",
        key_prefix="x",
    )
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize("value", [None, "none"])
def test_release_null_means_no_release_file(value: object) -> None:
    spec = parse({"release": value})
    assert spec.release is None
    assert resolve_release(spec, HOST, "x86-64", target_label="t") is None


def test_confext_paths() -> None:
    spec = parse({"type": "confext", "units": {"a.service": "[Unit]\n"}})
    assert spec.release_path == "/etc/extension-release.d/extension-release.hello"
    assert spec.unit_dir == "/etc/systemd/system"


def test_mode_forms() -> None:
    files = [
        {"path": "/usr/a", "content": "", "mode": "0755"},
        {"path": "/usr/b", "content": "", "mode": "644"},
        {"path": "/usr/c", "content": "", "mode": "0o4755"},
        {"path": "/usr/d", "content": "", "mode": 0o640},  # YAML 0640
    ]
    spec = parse({"files": files})
    assert [f.mode for f in spec.files] == [0o755, 0o644, 0o4755, 0o640]


def test_unit_dropin_allowed() -> None:
    spec = parse({"units": {"hello.service.d/10-up.conf": "[Unit]\n", "a@.service": ""}})
    assert [n for n, _ in spec.units] == ["hello.service.d/10-up.conf", "a@.service"]


def test_content_outside_hierarchies_allowed() -> None:
    spec = parse({"files": [{"path": "/etc/foo", "content": "x"}]})
    assert spec.files[0].path == "/etc/foo"


def test_own_release_file_with_release_null() -> None:
    spec = parse(
        {
            "release": None,
            "files": [
                {
                    "path": "/usr/lib/extension-release.d/extension-release.hello",
                    "content": "ID='testos'\n",
                }
            ],
        }
    )
    assert spec.release is None


def test_prebuilt_relative_to_yaml(tmp_path: Path) -> None:
    (tmp_path / "img.raw").write_bytes(b"x")
    spec = parse_extension_spec(
        "pre",
        {"image": "img.raw", "type": "confext"},
        source=tmp_path / "scenario.yaml",
        key_prefix="extensions.pre",
    )
    assert spec.format == "prebuilt"
    assert spec.image == tmp_path / "img.raw"
    assert spec.type == "confext"
    assert spec.release is None


def test_load_standalone_file(tmp_path: Path) -> None:
    f = tmp_path / "hello.yaml"
    f.write_text(
        "name: hello\nrelease:\n  ID: _any\nfiles:\n  - path: /usr/bin/hello\n"
        "    content: hi\n    mode: 0755\n"
    )
    spec = load_extension_spec_file(f)
    assert spec.name == "hello"
    assert spec.files[0].mode == 0o755
    assert dict(spec.release or {}) == {"ID": "_any"}


def test_example_spec_in_repo_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "hello-sysext.yaml"
    spec = load_extension_spec_file(example)
    assert spec.name == "hello"
    assert spec.units


# --------------------------------------------------------------------------- bad specs


def test_unknown_top_level_key_lists_allowed() -> None:
    err = one_error({"fils": []}, f"{PREFIX}.fils")
    assert "unknown key" in err.message
    assert err.allowed is not None and "files" in err.allowed and "units" in err.allowed


def test_unknown_file_key() -> None:
    err = one_error(
        {"files": [{"path": "/usr/a", "content": "", "owner": "x"}]}, f"{PREFIX}.files[0].owner"
    )
    assert err.allowed == "path, content, symlink, directory, mode, size"


@pytest.mark.parametrize(
    ("key", "value", "allowed_part"),
    [
        ("type", "portable", "sysext, confext"),
        ("format", "ext4", "squashfs, erofs, directory"),
        ("relaxed_release_name", "yes", "true, false"),
        ("release", ["ID=x"], "mapping"),
        ("files", {"path": "/usr/a"}, "list"),
        ("units", ["a.service"], "mapping"),
    ],
)
def test_bad_top_level_values(key: str, value: object, allowed_part: str) -> None:
    err = one_error({key: value}, f"{PREFIX}.{key}")
    assert err.value == value
    assert err.allowed is not None and allowed_part in err.allowed


@pytest.mark.parametrize(
    "mode", ["0999", "rwxr-xr-x", "", 0o17777, -1, True, 755, 644, 1.5, "07777x"]
)
def test_bad_modes(mode: object) -> None:
    err = one_error(
        {"files": [{"path": "/usr/a", "content": "", "mode": mode}]}, f"{PREFIX}.files[0].mode"
    )
    assert err.allowed is not None and "0755" in err.allowed
    assert err.file == "scenario.yaml"


def test_decimal_mode_hint() -> None:
    err = one_error(
        {"files": [{"path": "/usr/a", "content": "", "mode": 755}]}, f"{PREFIX}.files[0].mode"
    )
    assert '"0755"' in err.message


@pytest.mark.parametrize(
    "path", ["usr/bin/x", "/usr/../etc/x", "/usr/bin/", "/usr//bin", "/", "/./usr", 5, None]
)
def test_bad_paths(path: object) -> None:
    err = one_error({"files": [{"path": path, "content": ""}]}, f"{PREFIX}.files[0].path")
    assert err.allowed is not None and "absolute" in err.allowed


def test_missing_path() -> None:
    err = one_error({"files": [{"content": ""}]}, f"{PREFIX}.files[0].path")
    assert "missing path" in err.message


@pytest.mark.parametrize(
    "entry",
    [
        {"path": "/usr/a"},
        {"path": "/usr/a", "content": "x", "symlink": "y"},
        {"path": "/usr/a", "directory": True, "content": "x"},
        {"path": "/usr/a", "directory": False},
    ],
)
def test_entry_needs_exactly_one_kind(entry: dict[str, object]) -> None:
    err = one_error({"files": [entry]}, f"{PREFIX}.files[0]")
    assert err.allowed is not None and "exactly one" in err.allowed


def test_bad_entry_fields() -> None:
    errs = errors_of(
        {
            "files": [
                {"path": "/usr/a", "content": 5},
                {"path": "/usr/b", "symlink": ""},
                {"path": "/usr/c", "directory": "yes"},
                {"path": "/usr/d", "symlink": "x", "mode": "0755"},
                "just a string",
            ]
        }
    )
    keys = {e.key for e in errs}
    assert {
        f"{PREFIX}.files[0].content",
        f"{PREFIX}.files[1].symlink",
        f"{PREFIX}.files[2].directory",
        f"{PREFIX}.files[3].mode",
        f"{PREFIX}.files[4]",
    } <= keys


def test_all_problems_reported_together() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse({"type": "x", "format": "y", "files": [{"path": "rel", "content": ""}]})
    keys = [e.key for e in info.value.errors]
    assert keys == [f"{PREFIX}.type", f"{PREFIX}.format", f"{PREFIX}.files[0].path"]
    assert info.value.exit_code == 2
    assert "scenario.yaml: extensions.hello.type" in str(info.value)


@pytest.mark.parametrize("key", ["id", "1ABC", "A-B", "A B", ""])
def test_bad_release_keys(key: str) -> None:
    err = one_error({"release": {key: "x"}}, f"{PREFIX}.release.{key}")
    assert err.allowed is not None and "^[A-Z][A-Z0-9_]*$" in err.allowed


@pytest.mark.parametrize("value", [True, False, None, ["a"], {"a": 1}, "a\nb"])
def test_bad_release_values(value: object) -> None:
    err = one_error({"release": {"ID": value}}, f"{PREFIX}.release.ID")
    assert err.allowed is not None and "host" in err.allowed


def test_boolean_release_value_message() -> None:
    err = one_error(
        {"release": {"EXTENSION_RELOAD_MANAGER": True}},
        f"{PREFIX}.release.EXTENSION_RELOAD_MANAGER",
    )
    assert "boolean" in err.message


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a b", "-x"])
def test_bad_extension_names(name: str) -> None:
    errs = errors_of({}, name)
    assert errs[0].key == PREFIX
    assert errs[0].allowed is not None and "letters" in errs[0].allowed


def test_bad_release_name() -> None:
    one_error({"release_name": "a/b"}, f"{PREFIX}.release_name")


@pytest.mark.parametrize("key", ["release_name", "relaxed_release_name"])
def test_release_name_options_need_release(key: str) -> None:
    value: object = "other" if key == "release_name" else True
    err = one_error({"release": None, key: value}, f"{PREFIX}.{key}")
    assert "release is null" in err.message


@pytest.mark.parametrize("name", ["hello", "hello.txt", "../x.service", "a/b.service", ""])
def test_bad_unit_names(name: str) -> None:
    err = one_error({"units": {name: "[Unit]\n"}}, f"{PREFIX}.units.{name}")
    assert err.allowed is not None and "hello.service" in err.allowed


def test_bad_unit_text() -> None:
    one_error({"units": {"a.service": None}}, f"{PREFIX}.units.a.service")


def test_duplicate_paths() -> None:
    err = one_error(
        {"files": [{"path": "/usr/a", "content": ""}, {"path": "/usr/a", "content": "x"}]},
        f"{PREFIX}.files[1].path",
    )
    assert "files[0]" in err.message


def test_unit_conflicts_with_file() -> None:
    one_error(
        {
            "files": [{"path": "/usr/lib/systemd/system/a.service", "content": ""}],
            "units": {"a.service": ""},
        },
        f"{PREFIX}.units.a.service",
    )


def test_file_conflicts_with_release_file() -> None:
    err = one_error(
        {
            "files": [
                {
                    "path": "/usr/lib/extension-release.d/extension-release.hello",
                    "content": "ID=x\n",
                }
            ]
        },
        f"{PREFIX}.release",
    )
    assert "release: null" in err.message


def test_path_below_a_file() -> None:
    err = one_error(
        {"files": [{"path": "/usr/a", "content": ""}, {"path": "/usr/a/b", "content": ""}]},
        f"{PREFIX}.files[1].path",
    )
    assert "/usr/a" in err.message


def test_path_below_explicit_directory_ok() -> None:
    parse({"files": [{"path": "/usr/a", "directory": True}, {"path": "/usr/a/b", "content": ""}]})


def test_image_excludes_build_keys(tmp_path: Path) -> None:
    (tmp_path / "x.raw").write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        parse_extension_spec(
            "hello",
            {"image": "x.raw", "files": [], "format": "erofs"},
            source=tmp_path / "s.yaml",
            key_prefix=PREFIX,
        )
    assert info.value.key == f"{PREFIX}.image"
    assert "format, files" in info.value.message


def test_image_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_extension_spec(
            "hello", {"image": "missing.raw"}, source=tmp_path / "s.yaml", key_prefix=PREFIX
        )
    assert info.value.key == f"{PREFIX}.image"
    assert "does not exist" in info.value.message


def test_spec_not_a_mapping() -> None:
    err = one_error(["files"], PREFIX)
    assert "mapping" in err.message


def test_standalone_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    with pytest.raises(ConfigError, match="cannot read"):
        load_extension_spec_file(f)
    f.write_text("files: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_extension_spec_file(f)
    f.write_text("- a\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_extension_spec_file(f)
    f.write_text("files: []\n")
    with pytest.raises(ConfigError) as info:
        load_extension_spec_file(f)
    assert info.value.key == "name"
    f.write_text("name: hello\nformat: zip\n")
    with pytest.raises(ConfigError) as info:
        load_extension_spec_file(f)
    assert info.value.key == "format"
    assert info.value.file == str(f)


# --------------------------------------------------------------------------- host resolution


def test_resolve_host_values() -> None:
    spec = parse(
        {
            "release": {
                "ID": "host",
                "VERSION_ID": "host",
                "SYSEXT_LEVEL": "host",
                "ARCHITECTURE": "host",
                "ID_LIKE": "host",
                "EXTRA": "fixed",
            }
        }
    )
    assert resolve_release(spec, HOST, "arm64", target_label="refos-257-flatcar") == {
        "ID": "flatcar",
        "VERSION_ID": "4081.2.0",
        "SYSEXT_LEVEL": "1.0",
        "ARCHITECTURE": "arm64",
        "ID_LIKE": "coreos",
        "EXTRA": "fixed",
    }


def test_resolve_confext_level() -> None:
    spec = parse({"type": "confext", "release": {"ID": "host", "CONFEXT_LEVEL": "host"}})
    host = {"ID": "debian", "CONFEXT_LEVEL": "7"}
    assert resolve_release(spec, host, "x86-64", target_label="t") == {
        "ID": "debian",
        "CONFEXT_LEVEL": "7",
    }


def test_resolve_default_release() -> None:
    spec = parse({})
    assert resolve_release(spec, HOST, "x86-64", target_label="t") == {
        "ID": "flatcar",
        "VERSION_ID": "4081.2.0",
    }
    # A rolling host without VERSION_ID: the default simply leaves it out.
    assert resolve_release(spec, {"ID": "arch"}, "x86-64", target_label="t") == {"ID": "arch"}


def test_resolve_missing_host_key() -> None:
    spec = parse({"release": {"ID": "host", "SYSEXT_LEVEL": "host"}})
    with pytest.raises(ConfigError) as info:
        resolve_release(
            spec, {"ID": "debian", "VERSION_ID": "12"}, "x86-64", target_label="refos-252-fcos"
        )
    err = info.value
    assert err.key == f"{PREFIX}.release.SYSEXT_LEVEL"
    assert "refos-252-fcos" in err.message and "SYSEXT_LEVEL" in err.message
    assert err.file == "scenario.yaml"


def test_resolve_several_missing_keys() -> None:
    spec = parse({"release": {"ID": "host", "SYSEXT_LEVEL": "host", "FOO": "host"}})
    with pytest.raises(ConfigErrors) as info:
        resolve_release(spec, {}, "x86-64", target_label="t")
    assert [e.key for e in info.value.errors] == [
        f"{PREFIX}.release.ID",
        f"{PREFIX}.release.SYSEXT_LEVEL",
        f"{PREFIX}.release.FOO",
    ]


def test_render_release_quoting() -> None:
    text = render_release(
        {"ID": "_any", "NAME": "Hello World", "Q": 'a"b', "RAW": "'testos'", "E": ""}
    )
    assert text == 'ID=_any\nNAME="Hello World"\nQ="a\\"b"\nRAW=\'testos\'\nE=\n'


def test_size_repeats_content_and_needs_it() -> None:
    spec = parse_extension_spec("big", {"files": [
        {"path": "/usr/share/big", "content": "0123456789", "size": 25}]},
        source=None, key_prefix=PREFIX)
    assert spec.files[0].content == "0123456789012345678901234"
    one_error({"files": [{"path": "/usr/a", "symlink": "b", "size": 3}]},
              f"{PREFIX}.files[0].size")
    one_error({"files": [{"path": "/usr/a", "content": "x", "size": 0}]},
              f"{PREFIX}.files[0].size")


def test_tamper_needs_an_uncompressed_image_and_a_known_file() -> None:
    files = [{"path": "/usr/share/blob", "content": "x" * 32}]
    spec = parse_extension_spec("t", {"format": "erofs", "tamper": "/usr/share/blob",
                                      "files": files}, source=None, key_prefix=PREFIX)
    assert spec.tamper == "/usr/share/blob"
    err = one_error({"format": "squashfs", "tamper": "/usr/share/blob", "files": files},
                    f"{PREFIX}.tamper")
    assert "erofs" in (err.allowed or "")
    one_error({"format": "erofs", "tamper": "/usr/share/other", "files": files},
              f"{PREFIX}.tamper")
