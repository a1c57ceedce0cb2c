"""Kairos cloud-config: host-side checks, the NoCloud seed ISO, and the guest applier run for
real on the host against a throw-away root tree (``--root``), as root."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import stat
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pycdlib
import pytest
import yaml

from harness.config.cloudconfig import (
    DEFAULT_META_DATA,
    add_ssh_key,
    check_cloud_config,
    check_cloud_config_data,
    make_seed_iso,
    render_cloud_config,
    validate_cloud_config,
)
from harness.errors import ConfigError, ConfigErrors

REPO = Path(__file__).resolve().parents[2]
APPLY = REPO / "images/overlay/usr/lib/sysext-harness/cloud-config-apply"
LINK = REPO / "images/overlay/usr/lib/sysext-harness/kairos-link-extensions"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa a@test"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb b@test"
KAIROS_UID = 1000


def keys_of(exc: ConfigErrors) -> set[str | None]:
    return {e.key for e in exc.errors}


# --- host-side checks -------------------------------------------------------------------------

def test_valid_config_returns_mapping_and_warnings() -> None:
    text = """#cloud-config
install: {auto: true, device: auto, reboot: true}
k3s: {enabled: true}
users:
- name: kairos
  passwd: kairos
  groups: [admin]
  ssh_authorized_keys: [KEY_A]
stages:
  initramfs:
  - name: extension
    files:
    - path: /var/lib/kairos/extensions/active/tool.sysext.raw
      content: aGVsbG8=
      encoding: b64
      permissions: 0644
  boot:
  - files:
    - {path: /etc/a, content: x, permissions: "0600", owner: kairos}
    systemctl: {enable: [a.service], overrides: []}
  reconcile:
  - commands: ["true"]
""".replace("KEY_A", KEY_A)
    config, warnings = check_cloud_config(text, source="cc.yaml")
    assert config["users"][0]["name"] == "kairos"
    assert config["stages"]["initramfs"][0]["files"][0]["permissions"] == 0o644
    joined = "\n".join(warnings)
    assert "users[0].passwd" in joined and "password logins are disabled" in joined
    assert "cc.yaml: k3s: has no effect" in joined
    assert "stages.boot[0].files[0].permissions" in joined  # quoted mode: persona only
    assert "stages.boot[0].files[0].owner" in joined  # a name: persona only
    assert "stages.boot[0].systemctl.overrides" in joined
    assert "stages.reconcile: this Kairos stage never runs" in joined
    assert not any("install" in w for w in warnings)
    assert validate_cloud_config(text, source="cc.yaml") == config


def test_header_is_required() -> None:
    with pytest.raises(ConfigErrors) as info:
        validate_cloud_config("users: []\n", source="cc.yaml")
    assert "must start with a '#cloud-config' line" in str(info.value)
    assert info.value.errors[0].file == "cc.yaml"
    assert info.value.exit_code == 2


def test_yaml_errors_name_the_line() -> None:
    with pytest.raises(ConfigErrors) as info:
        validate_cloud_config("#cloud-config\nusers:\n  - name: a\n   bad: [\n", source="x")
    assert re.search(r"not valid YAML: .*\(line \d+, column \d+\)", str(info.value))


def test_structural_errors_are_collected_with_key_paths() -> None:
    text = """#cloud-config
users:
- groups: [admin]
- name: Bad Name
  groups: admin
stages:
  bot:
  - commands: [true]
  boot:
  - files:
    - path: /etc/ok
      permissions: 0644
    - path: /etc/bad
      permissions: rw-r--r--
    - path: relative/path
    comands: [echo]
    systemctl: {restart: [a.service], enable: a.service}
  fs:
  - only_os: ubuntu
    commands: echo
  network:
  - users:
      bob: {ssh_authorized_keys: ["github:bob"], uid: -1}
    environment: {"1BAD": x}
    commands: [true]
  initramfs: {name: not a list}
  initramfs.after:
  - downloads:
    - {url: "ftp://host/x", path: /x, timeout: 0}
"""
    with pytest.raises(ConfigErrors) as info:
        validate_cloud_config(text, source="scenario.yaml")
    keys = keys_of(info.value)
    expected = {
        "users[0].name",
        "users[1].name",
        "users[1].groups",
        "stages.bot",
        "stages.boot[0].files[1].permissions",
        "stages.boot[0].files[2].path",
        "stages.boot[0].comands",
        "stages.boot[0].systemctl.restart",
        "stages.boot[0].systemctl.enable",
        "stages.fs[0].only_os",
        "stages.fs[0].commands",
        "stages.network[0].users.bob.ssh_authorized_keys[0]",
        "stages.network[0].users.bob.uid",
        "stages.network[0].environment",
        "stages.network[0].commands[0]",
        "stages.initramfs",
        "stages.initramfs.after[0].downloads[0].url",
        "stages.initramfs.after[0].downloads[0].timeout",
    }
    assert expected <= keys, expected - keys
    assert all(e.file == "scenario.yaml" for e in info.value.errors)
    rendered = str(info.value)
    assert "scenario.yaml: stages.boot[0].files[1].permissions: must be an octal mode" in rendered
    assert "allowed: " in rendered  # unknown keys and stages list what is accepted
    assert "YAML read this as bool, so quote it" in rendered


def test_decimal_mode_is_caught() -> None:
    text = "#cloud-config\nstages:\n  boot:\n  - files: [{path: /etc/x, permissions: 644}]\n"
    with pytest.raises(ConfigErrors) as info:
        validate_cloud_config(text, source="x")
    assert "644 is a decimal number (octal 1204); write 0644" in str(info.value)


def test_key_prefix_for_inline_configs() -> None:
    with pytest.raises(ConfigErrors) as info:
        check_cloud_config_data({"stages": {"boot": [{"files": [{"path": "x"}]}]}},
                                source="s.yaml", key_prefix="provisioning.cloud_config")
    assert keys_of(info.value) == {"provisioning.cloud_config.stages.boot[0].files[0].path"}


def test_add_ssh_key() -> None:
    original = {"users": [{"name": "kairos", "groups": ["admin"]}], "stages": {}}
    updated = add_ssh_key(original, "kairos", KEY_A + "\n")
    assert updated["users"][0] == {"name": "kairos", "groups": ["admin"],
                                   "ssh_authorized_keys": [KEY_A]}
    assert "ssh_authorized_keys" not in original["users"][0]  # input left alone
    assert add_ssh_key(updated, "kairos", KEY_A) == updated  # no duplicates
    other = add_ssh_key({}, "root", KEY_B)
    assert other == {"users": [{"name": "root", "ssh_authorized_keys": [KEY_B]}]}
    with pytest.raises(ConfigError):
        add_ssh_key({}, "kairos", KEY_A + "\n" + KEY_B)
    with pytest.raises(ConfigError):
        add_ssh_key({"users": {"kairos": {}}}, "kairos", KEY_A)


def test_render_round_trips_with_header() -> None:
    config = {
        "users": [{"name": "kairos", "ssh_authorized_keys": [KEY_A]}],
        "stages": {"boot": [{"name": "unit", "files": [
            {"path": "/etc/systemd/system/x.service", "permissions": 0o644,
             "content": "[Service]\nExecStart=/bin/true\n"}]}]},
        "hostname": "yes",
    }
    text = render_cloud_config(config)
    assert text.startswith("#cloud-config\n")
    assert "content: |" in text  # file contents stay readable in the seed
    parsed, warnings = check_cloud_config(text, source="rendered")
    assert parsed == config and warnings == []
    assert render_cloud_config({}) == "#cloud-config\n"


# --- the seed ISO -----------------------------------------------------------------------------

def _iso_read(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, **path)
    return buf.getvalue()


def test_seed_iso_layout(tmp_path: Path) -> None:
    user_data = render_cloud_config({"hostname": "seeded"})
    out = make_seed_iso(user_data, tmp_path / "sub/seed.iso")
    assert out == tmp_path / "sub/seed.iso" and out.stat().st_size > 0
    assert not list(out.parent.glob(".*tmp"))
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.has_joliet() and iso.has_rock_ridge()
        names = {c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                 if c.rock_ridge is not None and not c.is_dot() and not c.is_dotdot()}
        assert names == {"user-data", "meta-data"}
        assert _iso_read(iso, rr_path="/user-data").decode() == user_data
        assert _iso_read(iso, joliet_path="/user-data").decode() == user_data
        assert _iso_read(iso, rr_path="/meta-data").decode() == DEFAULT_META_DATA
    finally:
        iso.close()
    custom = make_seed_iso(user_data, tmp_path / "c.iso", meta_data="instance-id: other\n")
    iso = pycdlib.PyCdlib()
    iso.open(str(custom))
    try:
        assert _iso_read(iso, joliet_path="/meta-data") == b"instance-id: other\n"
    finally:
        iso.close()


# --- the guest applier, for real against a root tree ------------------------------------------

@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A minimal root like the reference image's: root and the persona's kairos user."""
    tree = tmp_path / "root"
    etc = tree / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                f"kairos:x:{KAIROS_UID}:{KAIROS_UID}:kairos:/home/kairos:/bin/bash\n")
    (etc / "group").write_text(f"root:x:0:\nkairos:x:{KAIROS_UID}:\n")
    (etc / "shadow").write_text("root:*:20000:0:99999:7:::\nkairos:*:20000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nkairos:!::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    home = tree / "home/kairos"
    home.mkdir(parents=True)
    os.chown(home, KAIROS_UID, KAIROS_UID)
    (tree / "root").mkdir(mode=0o700)
    return tree


def apply(root: Path, user_data: str | None, *args: str,
          seed: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(APPLY), "--root", str(root),
            "--console", str(root.parent / "console.log"), *args]
    if user_data is not None:
        ud = root.parent / "user-data"
        ud.write_text(user_data)
        argv += ["--user-data", str(ud)]
    if seed is not None:
        argv += ["--seed-device", str(seed)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def result_of(root: Path) -> dict:
    return json.loads((root / "run/sysext-harness/cloud-config-result.json").read_text())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


FULL = f"""#cloud-config
hostname: kairos-node
users:
- name: kairos
  passwd: secret
  groups: [admin]
  ssh_authorized_keys: ["{KEY_A}"]
- name: alice
  shell: /bin/sh
  groups: [admin, ops]
  ssh_authorized_keys: ["{KEY_B}"]
write_files:
- path: /etc/motd
  content: hello
  owner: root:kairos
runcmd:
- echo runcmd >> "$SYSEXT_HARNESS_ROOT/order"
stages:
  rootfs:
  - commands: ['echo rootfs >> "$SYSEXT_HARNESS_ROOT/order"']
  initramfs.before:
  - commands: ['echo initramfs.before >> "$SYSEXT_HARNESS_ROOT/order"']
  initramfs:
  - name: extension layout
    directories:
    - path: /var/lib/kairos/extensions/active
      permissions: 0750
      owner: {KAIROS_UID}
      group: 0
    files:
    - path: /var/lib/kairos/extensions/tool.sysext.raw
      content: aGVsbG8gc3lzZXh0
      encoding: base64
      permissions: 0644
    - path: /etc/systemd/system/tool.service
      content: |
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
    - path: /etc/kairos/secret.conf
      content: "token=1\\n"
      permissions: "0600"
      owner: kairos
      group: kairos
    commands:
    - echo initramfs >> "$SYSEXT_HARNESS_ROOT/order"
    - test -f "$SYSEXT_HARNESS_ROOT/etc/kairos/secret.conf"
    - echo "$SYSEXT_HARNESS_CLOUD_CONFIG_STAGE" > "$SYSEXT_HARNESS_ROOT/stage-name"
  fs:
  - if: '[ -e "$SYSEXT_HARNESS_ROOT/does-not-exist" ]'
    commands: [exit 7]
  - if: 'true'
    commands: ['echo fs >> "$SYSEXT_HARNESS_ROOT/order"']
  boot:
  - name: units
    systemctl:
      enable: [tool.service]
      start: [tool.service]
  - users:
      svc:
        homedir: /srv/svc
        ssh_authorized_keys: ["{KEY_A}"]
    environment:
      EXTENSIONS_DIR: /var/lib/kairos/extensions
  boot.after:
  - commands: ['echo boot.after >> "$SYSEXT_HARNESS_ROOT/order"']
  network:
  - commands: ['echo network >> "$SYSEXT_HARNESS_ROOT/order"']
"""


def test_guest_applies_full_config(root: Path) -> None:
    proc = apply(root, FULL)
    assert proc.returncode == 0, proc.stderr
    assert "SYSEXT-HARNESS-CLOUD-CONFIG-APPLIED stage=all" in proc.stdout
    console = (root.parent / "console.log").read_text()
    assert console.strip() == "SYSEXT-HARNESS-CLOUD-CONFIG-APPLIED stage=all"

    # stage order; `if` skips; the top-level keys are the first step of boot
    assert (root / "order").read_text().split() == [
        "rootfs", "initramfs.before", "initramfs", "fs", "runcmd", "boot.after", "network"]
    assert (root / "stage-name").read_text().strip() == "initramfs"

    # directories and files: content, modes, owners (numbers and names)
    active = root / "var/lib/kairos/extensions/active"
    assert mode_of(active) == 0o750 and active.stat().st_uid == KAIROS_UID
    image = root / "var/lib/kairos/extensions/tool.sysext.raw"
    assert image.read_bytes() == b"hello sysext" and mode_of(image) == 0o644
    assert image.stat().st_uid == 0
    secret = root / "etc/kairos/secret.conf"
    assert secret.read_text() == "token=1\n" and mode_of(secret) == 0o600
    assert (secret.stat().st_uid, secret.stat().st_gid) == (KAIROS_UID, KAIROS_UID)
    motd = root / "etc/motd"
    groups = {line.split(":")[0]: line.split(":") for line in
              (root / "etc/group").read_text().splitlines()}
    assert motd.read_text() == "hello"
    assert (motd.stat().st_uid, motd.stat().st_gid) == (0, KAIROS_UID)

    # users: existing kairos joined admin; alice and svc were created with useradd --root
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc/passwd").read_text().splitlines()}
    assert "kairos" in groups["admin"][3].split(",") and "alice" in groups["admin"][3]
    assert "alice" in groups["ops"][3]
    assert passwd["alice"][6] == "/bin/sh" and passwd["alice"][5] == "/home/alice"
    assert passwd["svc"][5] == "/srv/svc"
    for user, key in (("kairos", KEY_A), ("alice", KEY_B), ("svc", KEY_A)):
        home = root / passwd[user][5].lstrip("/")
        uid, gid = int(passwd[user][2]), int(passwd[user][3])
        ssh = home / ".ssh"
        keys = ssh / "authorized_keys"
        assert mode_of(ssh) == 0o700 and mode_of(keys) == 0o600
        assert (ssh.stat().st_uid, ssh.stat().st_gid) == (uid, gid)
        assert (keys.stat().st_uid, keys.stat().st_gid) == (uid, gid)
        assert keys.read_text() == key + "\n"

    # systemctl --root enable; start is reported as skipped under --root
    wants = root / "etc/systemd/system/multi-user.target.wants/tool.service"
    assert wants.is_symlink()
    assert (root / "etc/hostname").read_text() == "kairos-node\n"
    assert "EXTENSIONS_DIR=/var/lib/kairos/extensions" in (root / "etc/environment").read_text()

    # first boot consumed: stamp and the copy the later units read
    assert (root / "etc/sysext-harness/cloud-config.done").exists()
    copy = root / "run/sysext-harness/user-data"
    assert copy.read_text() == FULL and mode_of(copy) == 0o600

    result = result_of(root)
    assert result["status"] == "applied" and "error" not in result
    assert set(result["stages"]) == {"rootfs", "initramfs", "fs", "boot", "network"}
    fs_steps = result["stages"]["fs"]["steps"]
    assert [s["status"] for s in fs_steps] == ["skipped", "applied"]
    steps = result["stages"]["initramfs"]["steps"]
    assert [s["where"] for s in steps] == ["stages.initramfs.before[0]", "stages.initramfs[0]"]
    actions = steps[1]["actions"]
    assert "file /etc/kairos/secret.conf mode=0600 owner=1000:1000 size=8" in actions
    assert any("users[0].passwd" in w for w in result["warnings"])
    assert any("start[0]: tool.service not started" in w for w in result["warnings"])


def test_guest_merges_existing_authorized_keys(root: Path) -> None:
    ssh = root / "home/kairos/.ssh"
    ssh.mkdir()
    (ssh / "authorized_keys").write_text(KEY_B + "\n")
    config = (f"#cloud-config\nssh_authorized_keys: ['{KEY_A}', '{KEY_B}']\n"
              "users: [{name: kairos}]\n")
    proc = apply(root, config)
    assert proc.returncode == 0, proc.stderr
    assert (ssh / "authorized_keys").read_text() == f"{KEY_B}\n{KEY_A}\n"


def test_guest_failing_command_stops_and_reports(root: Path) -> None:
    config = """#cloud-config
stages:
  initramfs:
  - name: ok
    commands: ['touch "$SYSEXT_HARNESS_ROOT/first"']
  - name: broken
    commands:
    - echo about to fail; echo "no such image" >&2; exit 3
    - touch "$SYSEXT_HARNESS_ROOT/never"
  boot:
  - commands: ['touch "$SYSEXT_HARNESS_ROOT/never-boot"']
"""
    proc = apply(root, config)
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.splitlines()
              if line.startswith("SYSEXT-HARNESS-CLOUD-CONFIG-FAILED: ")]
    assert len(failed) == 1
    assert "stages.initramfs[1].commands[0]" in failed[0]
    assert "exited 3" in failed[0] and "no such image" in failed[0]
    assert (root.parent / "console.log").read_text().strip() == failed[0]
    assert (root / "first").exists()
    assert not (root / "never").exists() and not (root / "never-boot").exists()
    assert not (root / "etc/sysext-harness/cloud-config.done").exists()
    assert not (root / "run/sysext-harness/user-data").exists()
    result = result_of(root)
    assert result["status"] == "failed" and "exited 3" in result["error"]
    assert result["stages"]["initramfs"]["status"] == "failed"
    assert [s["status"] for s in result["stages"]["initramfs"]["steps"]] == ["applied", "failed"]


@pytest.mark.parametrize(("user_data", "message"), [
    ("users: []\n", "does not start with a '#cloud-config' line"),
    ("#cloud-config\n- a list\n", "must be a YAML mapping"),
    ("#cloud-config\nstages:\n  boot:\n  - only_os: ubuntu\n", "stages.boot[0].only_os"),
    ("#cloud-config\nstages:\n  fs:\n  - files: [{path: /x, permissions: rw}]\n",
     "stages.fs[0].files[0].permissions"),
    ("#cloud-config\nusers: [{name: kairos, ssh_authorized_keys: ['github:me']}]\n",
     "users[0].ssh_authorized_keys[0]"),
])
def test_guest_rejects_bad_input(root: Path, user_data: str, message: str) -> None:
    proc = apply(root, user_data)
    assert proc.returncode == 1
    assert "SYSEXT-HARNESS-CLOUD-CONFIG-FAILED: " in proc.stderr
    assert message in proc.stderr


def test_guest_stages_run_separately_like_the_units(root: Path) -> None:
    config = """#cloud-config
stages:
  fs:
  - commands: ['echo fs >> "$SYSEXT_HARNESS_ROOT/order"']
  boot:
  - commands: ['echo boot >> "$SYSEXT_HARNESS_ROOT/order"']
  network:
  - commands: ['echo network >> "$SYSEXT_HARNESS_ROOT/order"']
"""
    proc = apply(root, config, "--stage", "early")
    assert proc.returncode == 0, proc.stderr
    assert (root / "order").read_text().split() == ["fs"]
    copy = root / "run/sysext-harness/user-data"
    assert copy.exists() and (root / "etc/sysext-harness/cloud-config.done").exists()
    for stage in ("boot", "network"):
        proc = subprocess.run(
            [sys.executable, str(APPLY), "--root", str(root), "--stage", stage,
             "--user-data", str(copy), "--console", str(root.parent / "console.log")],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"SYSEXT-HARNESS-CLOUD-CONFIG-APPLIED stage={stage}" in proc.stdout
    assert (root / "order").read_text().split() == ["fs", "boot", "network"]
    result = result_of(root)
    assert [run["stages"] for run in result["runs"]] == [
        ["rootfs", "initramfs", "fs"], ["boot"], ["network"]]
    assert result["status"] == "applied"


def test_guest_downloads_served_images(root: Path, tmp_path: Path) -> None:
    """yip's downloads, against a local HTTP server like the one the harness serves from."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "tools.sysext.raw").write_bytes(b"\x00image bytes")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        config = f"""#cloud-config
stages:
  network:
  - downloads:
    - url: {base}/tools.sysext.raw
      path: /var/lib/kairos/extensions/
      permissions: 0640
      owner: {KAIROS_UID}
    - url: {base}/tools.sysext.raw
      path: /var/lib/kairos/extensions/active/renamed.sysext.raw
"""
        check_cloud_config(config, source="dl")
        proc = apply(root, config, "--stage", "network")
        assert proc.returncode == 0, proc.stderr
        image = root / "var/lib/kairos/extensions/tools.sysext.raw"
        assert image.read_bytes() == b"\x00image bytes"
        assert mode_of(image) == 0o640 and image.stat().st_uid == KAIROS_UID
        assert (root / "var/lib/kairos/extensions/active/renamed.sysext.raw").exists()

        missing = f"#cloud-config\nstages:\n  network:\n  - downloads:\n" \
                  f"    - {{url: {base}/nope.raw, path: /x.raw, timeout: 5}}\n"
        proc = apply(root, missing, "--stage", "network")
        assert proc.returncode == 1
        assert "stages.network[0].downloads[0]: cannot download" in proc.stderr
        assert "404" in proc.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_guest_reads_the_seed_iso(root: Path, tmp_path: Path) -> None:
    user_data = render_cloud_config({"stages": {"fs": [{"files": [
        {"path": "/etc/from-seed", "content": "seeded\n"}]}]}})
    seed = make_seed_iso(user_data, tmp_path / "seed.iso",
                         meta_data="instance-id: test-42\nlocal-hostname: kairos\n")
    proc = apply(root, None, seed=seed)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/from-seed").read_text() == "seeded\n"
    result = result_of(root)
    assert result["source"] == str(seed) and result["instance_id"] == "test-42"
    assert (root / "run/sysext-harness/user-data").read_text() == user_data
    assert not [p for p in (root / "run/sysext-harness").iterdir() if p.name.startswith("seed.")]


def test_guest_reads_a_rock_ridge_only_seed(root: Path, tmp_path: Path) -> None:
    """Seeds made without Joliet (mkisofs -rock) are read by their Rock Ridge names."""
    data = b"#cloud-config\nhostname: rr-only\n"
    iso = pycdlib.PyCdlib()
    iso.new(rock_ridge="1.09", vol_ident="cidata")
    iso.add_fp(io.BytesIO(data), len(data), "/USERDATA.;1", rr_name="user-data")
    iso.write(str(tmp_path / "rr.iso"))
    iso.close()
    proc = apply(root, None, "--stage", "boot", seed=tmp_path / "rr.iso")
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/hostname").read_text() == "rr-only\n"


def test_docs_example_is_valid_and_applies(root: Path) -> None:
    """The example in docs/kairos.md passes the host checks and applies in the guest."""
    docs = (REPO / "docs/kairos.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.S)
    examples = [b for b in blocks if b.startswith("#cloud-config")]
    assert len(examples) >= 2
    for example in examples:
        config, warnings = check_cloud_config(example, source="docs/kairos.md")
        assert yaml.safe_load(example) == config and warnings == []
    inline = [yaml.safe_load(b)["provisioning"]["cloud_config"] for b in blocks
              if "provisioning:" in b]
    assert inline and all(check_cloud_config(text, source="docs")[1] == [] for text in inline)
    proc = apply(root, examples[0])  # the first one has no commands: safe to run on the host
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/systemd/system/multi-user.target.wants/hello-ext.service").is_symlink()


# --- Kairos extension links -------------------------------------------------------------------

def test_kairos_link_extensions(tmp_path: Path) -> None:
    base = tmp_path / "var/lib/kairos/extensions"
    for profile in ("active", "passive", "common"):
        (base / profile).mkdir(parents=True)
    (base / "tool.sysext.raw").write_bytes(b"img")
    (base / "active/tool.sysext.raw").symlink_to("../tool.sysext.raw")
    (base / "common/shared.sysext.raw").write_bytes(b"img")
    (base / "common/wrong-name.raw").write_bytes(b"img")
    (base / "active/dangling.sysext.raw").symlink_to("../missing.sysext.raw")
    (base / "passive/old.sysext.raw").write_bytes(b"img")
    confexts = tmp_path / "var/lib/kairos/confexts/common"
    confexts.mkdir(parents=True)
    (confexts / "etc.confext.raw").write_bytes(b"img")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(LINK), "--root", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=30)

    proc = run()
    assert proc.returncode == 0, proc.stderr
    links = tmp_path / "run/extensions"
    assert sorted(p.name for p in links.iterdir()) == ["shared.sysext.raw", "tool.sysext.raw"]
    assert os.readlink(links / "tool.sysext.raw") == str(base / "tool.sysext.raw")
    assert (tmp_path / "run/confexts/etc.confext.raw").resolve() == confexts / "etc.confext.raw"
    assert (tmp_path / "run/cos/active_mode").read_text() == "1"
    assert "wrong-name.raw: name does not end in .sysext.raw" in proc.stderr
    assert "dangling link" in proc.stderr

    # another boot state: the previous state's links go, the marker moves
    proc = run("--state", "passive")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in links.iterdir()) == ["old.sysext.raw", "shared.sysext.raw"]
    assert (tmp_path / "run/cos/passive_mode").exists()
    assert not (tmp_path / "run/cos/active_mode").exists()

    proc = run("--mark-boot-state", "--state", "recovery")
    assert proc.returncode == 0 and (tmp_path / "run/cos/recovery_mode").exists()


# --- one schema on both sides -----------------------------------------------------------------

def _applier_module() -> object:
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("cloud_config_apply", str(APPLY))
    spec = importlib.util.spec_from_loader("cloud_config_apply", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(("host_name", "guest_name"), [
    ("STEP_KEYS", "STEP_KEYS"), ("IGNORED_STEP_KEYS", "IGNORED_STEP_KEYS"),
    ("CONDITION_KEYS", "CONDITION_KEYS"), ("FILE_KEYS", "FILE_KEYS"),
    ("DIRECTORY_KEYS", "DIR_KEYS"), ("DOWNLOAD_KEYS", "DOWNLOAD_KEYS"),
    ("USER_KEYS", "USER_KEYS"), ("SYSTEMCTL_KEYS", "SYSTEMCTL_KEYS"),
])
def test_host_checks_and_guest_applier_accept_the_same_keys(host_name: str,
                                                            guest_name: str) -> None:
    """The host refuses what the guest cannot apply and the other way round: a key added on
    one side only fails here, before a scenario finds out in a VM."""
    import harness.config.cloudconfig as host
    guest = _applier_module()
    assert set(getattr(host, host_name)) == set(getattr(guest, guest_name))


def test_host_and_guest_run_the_same_stages() -> None:
    import harness.config.cloudconfig as host
    guest = _applier_module()
    assert tuple(host.STAGES) == tuple(guest.ALL_STAGES)  # type: ignore[attr-defined]
