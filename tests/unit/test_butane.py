"""Butane -> Ignition translation: what upstream Butane emits, compared on decoded content.

Contents are compared after decoding the data URLs (and gunzipping), because zlib's and
Go's gzip output differ byte for byte; the choice of encoding is checked separately.
"""

from __future__ import annotations

import gzip
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.config import dataurl
from harness.config.butane import (
    SUPPORTED_VARIANTS,
    Problem,
    Rendered,
    looks_decimal,
    render_butane,
    spec_for,
)
from harness.config.ignition import validate_ignition
from harness.config.yamlv3 import load, to_bool, to_int
from harness.errors import ConfigError, ConfigErrors

DATA = Path(__file__).resolve().parents[1] / "data" / "butane"
FILES = DATA / "files"
EXPECTED_SPEC = {
    ("flatcar", "1.0.0"): "3.3.0", ("flatcar", "1.1.0"): "3.4.0",
    ("fcos", "1.3.0"): "3.2.0", ("fcos", "1.4.0"): "3.3.0",
    ("fcos", "1.5.0"): "3.4.0", ("fcos", "1.6.0"): "3.5.0",
}


def y(text: str) -> str:
    """An indented YAML block from a test, dedented."""
    return textwrap.dedent(text)


def render(text: str, **kwargs: Any) -> Rendered:
    return render_butane(text, **kwargs)


def failures(text: str, **kwargs: Any) -> list[tuple[str | None, str]]:
    with pytest.raises(ConfigErrors) as info:
        render(text, **kwargs)
    return [(e.key, e.message) for e in info.value.errors]


def node(config: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
    return next(n for n in config["storage"][kind] if n["path"] == path)


def contents(config: dict[str, Any], path: str) -> bytes:
    """The bytes a file will hold: its data URL decoded, gunzipped when compressed."""
    res = node(config, "files", path)["contents"]
    data = dataurl.decode(res["source"])
    return gzip.decompress(data) if res.get("compression") == "gzip" else data


FLATCAR = "variant: flatcar\nversion: 1.0.0\n"


# --- variants and versions ------------------------------------------------------------


def test_supported_variants() -> None:
    assert SUPPORTED_VARIANTS == {"flatcar": ("1.0.0", "1.1.0"),
                                  "fcos": ("1.3.0", "1.4.0", "1.5.0", "1.6.0")}


@pytest.mark.parametrize(("variant", "version"), sorted(EXPECTED_SPEC))
def test_each_version_emits_its_spec(variant: str, version: str) -> None:
    rendered = render(f"variant: {variant}\nversion: {version}\n")
    assert rendered.spec_version == EXPECTED_SPEC[(variant, version)]
    assert rendered.ignition == {"ignition": {"version": rendered.spec_version}}
    assert spec_for(variant, version) == rendered.spec_version
    assert rendered.warnings == ()


@pytest.mark.parametrize(("text", "key", "message"), [
    ("version: 1.0.0\n", "variant", "must be specified"),
    ("variant: flatcar\n", "version", "must be a valid semver"),
    ("variant: flatcar\nversion: '1.0'\n", "version", "must be a valid semver"),
    ("variant: fcos\nversion: 1.2.0\n", "version", "unsupported version '1.2.0'"),
    ("variant: fcos\nversion: 1.7.0\n", "version", "unsupported version '1.7.0'"),
    ("variant: openshift\nversion: 4.14.0\n", "variant", "unsupported Butane variant"),
])
def test_bad_variant_or_version(text: str, key: str, message: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        render(text, source="x.bu")
    (error,) = info.value.errors
    assert error.key == key and message in error.message
    assert error.allowed  # says what is accepted


@pytest.mark.parametrize("path", sorted(DATA.glob("*.bu")), ids=lambda p: p.name)
def test_sample_inputs_render_cleanly(path: Path) -> None:
    rendered = render_butane(path.read_text(), source=path, files_dir=FILES, strict=True)
    raw = yaml.safe_load(path.read_text())
    assert rendered.spec_version == EXPECTED_SPEC[(raw["variant"], raw["version"])]
    assert not [p for p in validate_ignition(rendered.ignition) if p.severity == "error"]


# --- YAML as yaml.v3 reads it -----------------------------------------------------------


@pytest.mark.parametrize(("text", "mode"), [
    ("0644", 0o644), ("0o644", 0o644), ("420", 420), ("0755", 0o755), ("0x1a4", 420),
    ("0", 0), ("04755", 0o4755),
])
def test_modes_are_read_like_yaml_v3(text: str, mode: int) -> None:
    rendered = render(FLATCAR + f"storage:\n  files:\n    - path: /x\n      mode: {text}\n")
    assert rendered.ignition["storage"]["files"][0]["mode"] == mode


def test_quoted_mode_is_a_string_and_refused() -> None:
    found = failures(FLATCAR + "storage:\n  files:\n    - path: /x\n      mode: '0644'\n")
    assert found == [("storage.files[0].mode", "expected integer, got string '0644'")]


def test_unquoted_scalars_take_the_type_of_their_field() -> None:
    rendered = render(FLATCAR + y("""\
        passwd:
          users:
            - name: yes
              groups: [0644, true]
        systemd:
          units:
            - name: a.service
              enabled: yes
              mask: off
        """))
    assert rendered.ignition["passwd"]["users"][0] == {"name": "yes", "groups": ["0644", "true"]}
    assert rendered.ignition["systemd"]["units"][0] == {"name": "a.service", "enabled": True,
                                                        "mask": False}


def test_yaml_loader_helpers() -> None:
    doc = load("a: 0o17\nb: '0o17'\nc: ~\nd:\ne: on\n")
    assert to_int(doc["a"]) == 15 and to_int(doc["b"]) is None
    assert to_int(doc["b"], lenient=True) == 15
    assert doc["c"] is None and doc["d"] is None
    assert to_bool(doc["e"]) is True and to_bool("maybe") is None
    assert to_int("1e3", lenient=True) == 1000 and to_int("1.5", lenient=True) is None


def test_duplicate_yaml_keys_are_an_error_with_a_line() -> None:
    with pytest.raises(ConfigErrors) as info:
        render(FLATCAR + "storage: {}\nstorage: {}\n", source="dup.bu")
    (error,) = info.value.errors
    assert error.file == "dup.bu:4"
    assert 'mapping key "storage" already defined at line 3' in error.message


def test_merge_keys_may_be_overridden() -> None:
    rendered = render(FLATCAR + y("""\
        storage:
          files:
            - &base {path: /a, mode: 0600}
            - <<: *base
              path: /b
        """))
    assert [f["path"] for f in rendered.ignition["storage"]["files"]] == ["/a", "/b"]


def test_invalid_yaml_and_non_mappings() -> None:
    with pytest.raises(ConfigErrors) as info:
        render("variant: [flatcar\n", source="bad.bu")
    assert info.value.errors[0].file.startswith("bad.bu:")
    with pytest.raises(ConfigErrors, match="must be a mapping"):
        render("- a\n")


def test_a_pyyaml_mapping_is_accepted() -> None:
    raw = yaml.safe_load(FLATCAR + "storage:\n  files:\n    - path: /x\n      mode: 0o644\n"
                                   "    - path: /y\n      mode: 0644\n")
    assert raw["storage"]["files"][0]["mode"] == "0o644"  # what PyYAML makes of it
    rendered = render_butane(raw)
    assert [f["mode"] for f in rendered.ignition["storage"]["files"]] == [0o644, 0o644]


# --- modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "directory", "decimal"), [
    (644, False, True), (755, False, True), (600, False, True), (755, True, True),
    (420, False, False), (0o644, False, False), (493, True, False), (0, False, False),
    (7777, False, False), (8888, False, False), (1, False, False), (640, False, True),
])
def test_decimal_mode_heuristic(mode: int, directory: bool, decimal: bool) -> None:
    assert looks_decimal(mode, directory=directory) is decimal


def test_decimal_mode_warns_and_strict_refuses() -> None:
    text = FLATCAR + "storage:\n  directories:\n    - path: /d\n      mode: 755\n"
    rendered = render(text, source="m.bu")
    (warning,) = [w for w in rendered.warnings if w.path == "storage.directories[0].mode"]
    assert "remember to add a leading zero" in warning.message and warning.line == 6
    assert warning.severity == "warning"
    with pytest.raises(ConfigErrors) as info:
        render(text, source="m.bu", strict=True)
    assert any(e.key == "storage.directories[0].mode" and e.file == "m.bu:6"
               for e in info.value.errors)


# --- contents encoding (Butane's MakeDataURL) --------------------------------------------


def test_text_uses_the_percent_encoded_form() -> None:
    rendered = render(FLATCAR + "storage:\n  files:\n    - path: /x\n      contents:\n"
                                "        inline: hello world\n")
    res = node(rendered.ignition, "files", "/x")["contents"]
    assert res == {"compression": "", "source": "data:,hello%20world"}


def test_binary_uses_base64_when_shorter() -> None:
    rendered = render(FLATCAR + 'storage:\n  files:\n    - path: /x\n      contents:\n'
                                '        inline: "\\xff\\xfe\\xfd\\xfc\\xfb\\xfa"\n')
    res = node(rendered.ignition, "files", "/x")["contents"]
    assert res["source"].startswith("data:;base64,") and res["compression"] == ""
    assert contents(rendered.ignition, "/x") == "\xff\xfe\xfd\xfc\xfb\xfa".encode()


def test_large_compressible_contents_are_gzipped() -> None:
    body = "".join(f"line {i % 7} of a long and repetitive file\n" for i in range(200))
    rendered = render_butane({"variant": "fcos", "version": "1.4.0", "storage": {"files": [
        {"path": "/big", "contents": {"inline": body}}]}})
    res = node(rendered.ignition, "files", "/big")["contents"]
    assert res["compression"] == "gzip" and res["source"].startswith("data:;base64,")
    assert contents(rendered.ignition, "/big") == body.encode()


def test_encode_picks_the_shortest_form() -> None:
    assert dataurl.encode(b"abc") == ("data:,abc", "")
    assert dataurl.encode(b"a b") == ("data:,a%20b", "")
    assert dataurl.encode(b"\x00" * 3) == ("data:,%00%00%00", "")  # 15 < 17 characters
    assert dataurl.encode(b"\x00" * 6) == ("data:;base64,AAAAAAAA", "")
    url, compression = dataurl.encode(b"x" * 1000)
    assert compression == "gzip" and gzip.decompress(dataurl.decode(url)) == b"x" * 1000
    assert dataurl.encode(b"x" * 1000, allow_gzip=False)[1] == ""
    assert dataurl.escape(bytes(range(256))).count("%") == 256 - 62 - 9


def test_user_compression_is_kept_and_not_redone(tmp_path: Path) -> None:
    packed = gzip.compress(b"already packed")
    (tmp_path / "packed.gz").write_bytes(packed)
    assert dataurl.encode(packed, compression="gzip")[1] == "gzip"
    rendered = render(FLATCAR + y("""\
        storage:
          files:
            - path: /x
              contents:
                compression: gzip
                local: packed.gz
        """), files_dir=tmp_path)
    assert node(rendered.ignition, "files", "/x")["contents"]["compression"] == "gzip"
    assert contents(rendered.ignition, "/x") == b"already packed"


def test_remote_sources_pass_through() -> None:
    digest = "sha512-" + "ab" * 64
    rendered = render(FLATCAR + y(f"""\
        storage:
          files:
            - path: /x
              contents:
                source: https://example.com/x
                verification:
                  hash: {digest}
                http_headers:
                  - name: Authorization
                    value: Bearer t
        """))
    assert node(rendered.ignition, "files", "/x")["contents"] == {
        "source": "https://example.com/x",
        "httpHeaders": [{"name": "Authorization", "value": "Bearer t"}],
        "verification": {"hash": digest},
    }


def test_inline_with_a_wrong_hash_is_caught() -> None:
    found = failures(FLATCAR + y("""\
        storage:
          files:
            - path: /x
              contents:
                inline: hello
                verification:
                  hash: sha256-0000000000000000000000000000000000000000000000000000000000000000
        """))
    assert found[0][0] == "$.storage.files[0].contents.verification.hash"
    assert "hash verification failed" in found[0][1]


def test_append_fragments_are_encoded_too() -> None:
    rendered = render(FLATCAR + y("""\
        storage:
          files:
            - path: /x
              append:
                - inline: "one\\n"
                - source: https://example.com/two
        """))
    append = node(rendered.ignition, "files", "/x")["append"]
    assert dataurl.decode(append[0]["source"]) == b"one\n" and append[0]["compression"] == ""
    assert append[1] == {"source": "https://example.com/two"}


def test_only_one_source() -> None:
    found = failures(FLATCAR + "storage:\n  files:\n    - path: /x\n      contents:\n"
                               "        inline: a\n        source: https://e.com/x\n")
    assert found == [("storage.files[0].contents.source",
                      "only one of the following can be set: inline, local, source")]


# --- local files --------------------------------------------------------------------------


LOCAL = FLATCAR + "storage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: {}\n"


def test_local_contents() -> None:
    rendered = render(LOCAL.format("motd.txt"), files_dir=FILES)
    assert contents(rendered.ignition, "/etc/motd") == (FILES / "motd.txt").read_bytes()


@pytest.mark.parametrize(("name", "files_dir", "message"), [
    ("motd.txt", None, "must be specified with --files-dir"),
    ("../butane/files/motd.txt", FILES, "traverses outside the files directory"),
    ("/etc/passwd", FILES, "cannot read '/etc/passwd'"),  # joined to the files dir, as Go does
    ("missing.txt", FILES, "cannot read 'missing.txt'"),
])
def test_local_contents_errors(name: str, files_dir: Path | None, message: str) -> None:
    found = failures(LOCAL.format(name), files_dir=files_dir, source="l.bu")
    assert len(found) == 1
    assert found[0][0] == "storage.files[0].contents.local" and message in found[0][1]


def test_a_missing_local_file_does_not_also_complain_about_overwrite() -> None:
    text = LOCAL.format("missing.txt").replace("    - path: /etc/motd\n",
                                               "    - path: /etc/motd\n      overwrite: true\n")
    assert [k for k, _ in failures(text, files_dir=FILES)] == ["storage.files[0].contents.local"]


def test_units_and_keys_from_local_files() -> None:
    rendered = render_butane((DATA / "flatcar-1.1-local.bu").read_text(), files_dir=FILES)
    ign = rendered.ignition
    unit = ign["systemd"]["units"][0]
    assert unit["contents"] == (FILES / "units/hello-local.service").read_text()
    assert unit["dropins"][0]["contents"] == (FILES / "units/10-local.conf").read_text()
    keys = ign["passwd"]["users"][0]["sshAuthorizedKeys"]
    assert len(keys) == 3 and keys[1].endswith("local-1") and keys[2].endswith("local-2")


def test_contents_local_needs_flatcar_1_1() -> None:
    rendered = render(FLATCAR + "systemd:\n  units:\n    - name: a.service\n"
                                "      contents_local: units/hello-local.service\n",
                      files_dir=FILES)
    assert "contents" not in rendered.ignition["systemd"]["units"][0]
    (warning,) = rendered.warnings
    assert warning.path == "systemd.units[0].contents_local"
    assert "needs flatcar 1.1.0 or fcos 1.5.0" in warning.message


def test_contents_and_contents_local_exclude_each_other() -> None:
    found = failures("variant: flatcar\nversion: 1.1.0\nsystemd:\n  units:\n"
                     "    - name: a.service\n      contents: x\n      contents_local: y\n",
                     files_dir=FILES)
    assert found == [("systemd.units[0].contents_local",
                      "only one of the following can be set: contents, contents_local")]


# --- trees --------------------------------------------------------------------------------


def test_trees_embed_files_and_links() -> None:
    rendered = render(FLATCAR + y("""\
        storage:
          files:
            - path: /opt/tree/share/doc/README
              mode: 0600
          trees:
            - local: tree
              path: /opt/tree
        """), files_dir=FILES)
    ign = rendered.ignition
    assert node(ign, "files", "/opt/tree/bin/hello")["mode"] == 0o755
    assert contents(ign, "/opt/tree/bin/hello") == (FILES / "tree/bin/hello").read_bytes()
    assert node(ign, "files", "/opt/tree/share/doc/README")["mode"] == 0o600  # override kept
    assert contents(ign, "/opt/tree/share/doc/README") == b"plain data\n"
    assert node(ign, "links", "/opt/tree/bin/hi")["target"] == "hello"
    assert "directories" not in ign["storage"]  # Ignition creates parents itself


def test_tree_defaults_to_the_root() -> None:
    rendered = render(FLATCAR + "storage:\n  trees:\n    - local: tree/share\n",
                      files_dir=FILES)
    assert [f["path"] for f in rendered.ignition["storage"]["files"]] == ["/doc/README"]
    assert node(rendered.ignition, "files", "/doc/README")["mode"] == 0o644


@pytest.mark.parametrize(("tree", "extra", "message"), [
    ("- local: tree\n      path: /opt/t", "  files:\n    - path: /opt/t/bin/hello\n"
     "      contents:\n        inline: x\n", "matching filesystem node"),
    ("- local: tree\n      path: /opt/t", "  directories:\n    - path: /opt/t/bin/hi\n",
     "matching filesystem node"),
    ("- local: motd.txt", "", "root of tree must be a directory"),
    ("- local: nowhere", "", "no such directory"),
    ("- local: ../..", "", "traverses outside the files directory"),
    ("- path: /x", "", "local is required"),
])
def test_tree_errors(tree: str, extra: str, message: str) -> None:
    found = failures(FLATCAR + f"storage:\n  trees:\n    {tree}\n{extra}", files_dir=FILES)
    assert found[0][0] == "storage.trees[0]" and message in found[0][1]


def test_trees_need_a_files_dir() -> None:
    found = failures(FLATCAR + "storage:\n  trees:\n    - local: tree\n")
    assert found == [("storage.trees[0]", "local file paths are relative to a files directory "
                      "that must be specified with --files-dir")]


# --- the rest of the schema --------------------------------------------------------------


def test_sysext_sample_translates_every_section() -> None:
    rendered = render_butane((DATA / "flatcar-1.0-sysext.bu").read_text(), files_dir=FILES)
    ign = rendered.ignition
    assert ign["ignition"] == {"version": "3.3.0"}
    assert node(ign, "directories", "/etc/extensions")["mode"] == 0o755
    assert node(ign, "directories", "/opt/private") == {"path": "/opt/private", "mode": 0o700,
                                                         "user": {"name": "tester"}}
    assert contents(ign, "/etc/motd") == b"greetings from a local file\n"
    assert node(ign, "files", "/etc/motd")["overwrite"] is True
    script = node(ign, "files", "/opt/bin/check-extensions")
    assert script["contents"]["compression"] == "gzip"  # long enough to be worth it
    assert contents(ign, "/opt/bin/check-extensions").startswith(b"#!/bin/sh\n")
    assert node(ign, "links", "/etc/extensions/remote.raw") == {
        "path": "/etc/extensions/remote.raw", "overwrite": True,
        "target": "/var/lib/extensions/remote.raw"}
    assert node(ign, "links", "/opt/bin/check")["hard"] is True
    units = {u["name"]: u for u in ign["systemd"]["units"]}
    assert units["extensions-ready.service"]["enabled"] is True
    assert units["systemd-sysext.service"]["dropins"][0]["name"] == "10-harness.conf"
    assert units["update-engine.service"] == {"name": "update-engine.service", "mask": True}
    assert units["locksmithd.service"]["enabled"] is False
    assert ign["kernelArguments"] == {"shouldExist": ["systemd.journald.forward_to_console=1"],
                                      "shouldNotExist": ["quiet"]}
    users = {u["name"]: u for u in ign["passwd"]["users"]}
    assert users["tester"] == {"name": "tester", "uid": 1500, "homeDir": "/home/tester",
                               "shell": "/bin/bash"}


def test_snake_case_keys_become_camel_case() -> None:
    rendered = render("variant: fcos\nversion: 1.4.0\n" + y("""\
        ignition:
          timeouts: {http_response_headers: 5}
          proxy: {https_proxy: "https://proxy:3128", no_proxy: [example.com]}
          security:
            tls:
              certificate_authorities:
                - inline: "-----BEGIN CERTIFICATE-----\\n"
        storage:
          disks:
            - device: /dev/vdb
              wipe_table: true
              partitions:
                - label: data
                  size_mib: 100
                  start_mib: 0
                  type_guid: 0FC63DAF-8483-4772-8E79-3D69D8477DE4
          filesystems:
            - {device: /dev/disk/by-partlabel/data, format: ext4, wipe_filesystem: true,
               mount_options: [noatime], path: /var/data}
        passwd:
          users:
            - {name: u, password_hash: "*", no_create_home: true, primary_group: g}
        """))
    ign = rendered.ignition
    assert ign["ignition"]["timeouts"] == {"httpResponseHeaders": 5}
    assert ign["ignition"]["proxy"] == {"httpsProxy": "https://proxy:3128",
                                        "noProxy": ["example.com"]}
    ca = ign["ignition"]["security"]["tls"]["certificateAuthorities"][0]
    assert dataurl.decode(ca["source"]) == b"-----BEGIN CERTIFICATE-----\n"
    assert ign["storage"]["disks"][0]["partitions"][0] == {
        "label": "data", "sizeMiB": 100, "startMiB": 0,
        "typeGuid": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}
    assert ign["storage"]["disks"][0]["wipeTable"] is True
    assert ign["storage"]["filesystems"][0]["mountOptions"] == ["noatime"]
    assert ign["passwd"]["users"][0] == {"name": "u", "passwordHash": "*", "noCreateHome": True,
                                         "primaryGroup": "g"}


def test_kernel_arguments_only_where_the_spec_has_them() -> None:
    text = "variant: fcos\nversion: {}\nkernel_arguments:\n  should_exist: [quiet]\n"
    assert render(text.format("1.4.0")).ignition["kernelArguments"] == {"shouldExist": ["quiet"]}
    rendered = render(text.format("1.3.0"))
    assert "kernelArguments" not in rendered.ignition
    (warning,) = rendered.warnings
    assert warning.path == "kernel_arguments" and "fcos 1.4.0" in warning.message
    with pytest.raises(ConfigErrors):
        render(text.format("1.3.0"), strict=True)


def test_newer_specs_have_their_fields() -> None:
    rendered = render_butane((DATA / "fcos-1.6-basic.bu").read_text())
    assert rendered.ignition["storage"]["luks"][0] == {
        "name": "data", "device": "/dev/disk/by-partlabel/data", "discard": True,
        "cex": {"enabled": False}}
    arn = render_butane((DATA / "fcos-1.5-remote.bu").read_text(), files_dir=FILES)
    assert arn.ignition["storage"]["files"][0]["contents"]["source"].startswith("arn:aws:s3:")
    older = (DATA / "fcos-1.5-remote.bu").read_text().replace("version: 1.5.0", "version: 1.4.0")
    with pytest.raises(ConfigErrors, match="invalid url scheme"):
        render_butane(older, files_dir=FILES)


def test_unknown_keys_warn_and_strict_fails() -> None:
    text = FLATCAR + "storage:\n  filez: []\nignition:\n  version: 3.3.0\n"
    rendered = render(text, source="u.bu")
    assert [(w.path, w.message, w.line) for w in rendered.warnings] == [
        ("storage.filez", "unused key filez", 4), ("ignition.version", "unused key version", 6)]
    assert rendered.ignition == {"ignition": {"version": "3.3.0"}, "storage": {}}
    with pytest.raises(ConfigErrors) as info:
        render(text, source="u.bu", strict=True)
    assert [(e.file, e.key) for e in info.value.errors] == [("u.bu:4", "storage.filez"),
                                                            ("u.bu:6", "ignition.version")]
    assert all("--strict" in e.message for e in info.value.errors)


def test_ignition_warnings_are_passed_on() -> None:
    rendered = render(FLATCAR + "systemd:\n  units:\n    - name: a.service\n"
                                "      enabled: true\n      contents: \"[Service]\\n\"\n")
    assert [(w.path, w.severity, w.line) for w in rendered.warnings] == [
        ("$.systemd.units[0].contents", "warning", 7)]


@pytest.mark.parametrize(("text", "key", "message"), [
    ("variant: fcos\nversion: 1.4.0\nboot_device:\n  mirror:\n    devices: [/dev/a, /dev/b]\n",
     "boot_device", "not supported by sysext-harness"),
    ("variant: fcos\nversion: 1.5.0\ngrub:\n  users: [{name: root, password_hash: x}]\n",
     "grub", "not supported by sysext-harness"),
    (FLATCAR + "storage:\n  filesystems:\n    - {device: /dev/vdb, format: ext4, path: /v, "
               "with_mount_unit: true}\n",
     "storage.filesystems[0].with_mount_unit", "write the mount unit"),
    (FLATCAR + "storage:\n  luks:\n    - {name: d, device: /dev/vdb, clevis: {tpm2: true}}\n",
     "storage.luks[0].clevis", "not supported by the flatcar variant"),
])
def test_refused_butane_features(text: str, key: str, message: str) -> None:
    found = failures(text)
    assert any(k == key and message in m for k, m in found), found


def test_boot_device_is_just_unknown_to_flatcar() -> None:
    rendered = render(FLATCAR + "boot_device: {}\n")
    assert [w.path for w in rendered.warnings] == ["boot_device"]


def test_ignition_errors_have_json_paths_and_lines() -> None:
    text = FLATCAR + y("""\
        storage:
          files:
            - path: /ok
            - path: etc/relative
              mode: 0644
          links:
            - path: /l
        systemd:
          units:
            - name: no-extension
        """)
    with pytest.raises(ConfigErrors) as info:
        render(text, source="p.bu")
    found = [(e.file, e.key, e.message) for e in info.value.errors]
    assert found == [
        ("p.bu:6", "$.storage.files[1].path", "path not absolute"),
        ("p.bu:9", "$.storage.links[0].target", "link target is required"),
        ("p.bu:12", "$.systemd.units[0].name", "invalid systemd unit extension"),
    ]
    assert all(isinstance(e, ConfigError) and e.exit_code == 2 for e in info.value.errors)


def test_type_errors_are_listed_together() -> None:
    found = failures(FLATCAR + y("""\
        storage:
          files: {path: /x}
          directories:
            - path: [/d]
            - 7
        systemd:
          units:
            - name: a.service
              enabled: maybe
        passwd:
          users: [null]
        """))
    assert found == [
        ("storage.files", "expected a list, got an object"),
        ("storage.directories[0].path", "expected string, got a list"),
        ("storage.directories[1]", "expected an object, got '7'"),
        ("systemd.units[0].enabled", "expected boolean, got 'maybe'"),
    ]


def test_problem_is_shared_with_the_validator() -> None:
    assert Problem("a", "b").severity == "error"


# --- the command line -------------------------------------------------------------------


def test_cli_renders_to_stdout_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    source = DATA / "flatcar-1.0-sysext.bu"
    assert main(["config", "render", str(source), "--files-dir", str(FILES)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ignition"]["version"] == "3.3.0"
    out = tmp_path / "x.ign"
    assert main(["config", "render", str(source), "--files-dir", str(FILES), "-o", str(out),
                 "--strict"]) == 0
    assert json.loads(out.read_text()) == printed
    assert capsys.readouterr().out == ""


def test_cli_lists_every_problem_and_exits_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.bu"
    bad.write_text(FLATCAR + "bogus: 1\nstorage:\n  files:\n    - path: rel\n      mode: '1'\n")
    out = tmp_path / "bad.ign"
    assert main(["config", "render", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}:7: storage.files[0].mode: expected integer" in err
    assert f"error: {bad}:6: $.storage.files[0].path: path not absolute" in err
    assert f"warning: {bad}:3: bogus: unused key bogus" in err
    assert not out.exists()


def test_cli_warnings_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "w.bu"
    src.write_text(FLATCAR + "bogus: 1\n")
    assert main(["config", "render", str(src)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ignition": {"version": "3.3.0"}}
    assert captured.err == f"warning: {src}:3: bogus: unused key bogus\n"
    assert main(["config", "render", str(src), "--strict"]) == 2


def test_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "render", str(tmp_path / "missing.bu")]) == 2
    src = tmp_path / "ok.bu"
    src.write_text(FLATCAR)
    assert main(["config", "render", str(src), "--files-dir", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_files_dir_may_be_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)
    rendered = render(LOCAL.format("motd.txt"), files_dir=Path("files"))
    assert contents(rendered.ignition, "/etc/motd") == b"greetings from a local file\n"
    assert os.path.isdir("files")
