"""`sysext-harness check IMAGE`: an extension author's question, answered as a scenario.

Does my `.raw` merge, do its units start and do its programs run on the systems I ship
for? The check reads the image on the host (harness.extensions.inspect), picks the
targets its extension-release matches, and writes an ordinary scenario file that the
pytest plugin runs like any other: same machines, snapshots, artifacts and results
matrix. The file is kept, so an author can copy it into a scenarios/ directory and
extend it.
"""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.extensions.inspect import ImageInfo, describe_filesystem
from harness.extensions.lint import (
    ARCHITECTURES,
    Requirement,
    install_name,
    unit_requirements,
)
from harness.targets.model import Target

#: Where the guest keeps the failed units it had before the extension came.
FAILED_BEFORE = "/var/lib/sysext-harness-check/failed-before"
#: Default extension directory of confexts, which systemd-confext reads.
CONFEXT_DIR = "/var/lib/confexts"
#: confext, and with it systemd-confext.service, is new in systemd 254.
CONFEXT_SINCE = 254
#: ID_LIKE matching is in 257.13 and later (sysext-behaviour reference §1.1, step 5).
ID_LIKE_SINCE = 257
_TEST_SCRIPT_PATH = "/var/lib/sysext-harness-check/test"
#: The guest's failed units, one name per line, sorted (for `comm`).
_FAILED_UNITS = ("systemctl list-units --failed --no-legend --plain --full "
                 "| awk '{print $1}' | sort")
_HEREDOC_END = "SYSEXT_HARNESS_CHECK_EOF"
#: The tool (and its boot-time unit) that merges each hierarchy the check looks at.
_TOOL = {"/usr": "systemd-sysext", "/etc": "systemd-confext"}


@dataclass(frozen=True)
class CheckRequest:
    """What to check, beyond merging: from the command line."""

    images: tuple[ImageInfo, ...]
    units: tuple[str, ...] = ()  # must be active (after boot, or after a start)
    commands: tuple[str, ...] = ()  # must exit 0
    test_script: Path | None = None  # runs in the guest, must exit 0
    reboot: bool = True  # also check the merge at boot (what users get)
    # and after the next OS update on these targets (reference targets: their slot B)
    os_update_targets: tuple[str, ...] = ()
    trust: tuple[Path, ...] = ()  # certificates for /etc/verity.d (signed DDIs)
    # the names the images are installed under (`--as`), in image order; else their own
    install_as: tuple[str | None, ...] = ()

    def install_name(self, index: int) -> str:
        given = self.install_as[index] if index < len(self.install_as) else None
        return install_name(self.images[index], given)


# --------------------------------------------------------------------------- targets


def image_matches(info: ImageInfo, target: Target) -> tuple[bool, str]:
    """Whether systemd on `target` would take the image, judged from its release fields.

    Only ID (and ID_LIKE, 257+) and the extension type decide here; VERSION_ID,
    SYSEXT_LEVEL and SYSEXT_SCOPE are for the guest's systemd to judge in the check.
    """
    host = target.os_release
    ext_id = info.release.get("ID", "")
    if info.type == "confext" and target.systemd_version < CONFEXT_SINCE:
        return False, f"systemd {target.systemd_version} has no systemd-confext"
    if ext_id == "_any" or ext_id == host.get("ID"):
        return True, ""
    if ext_id in host.get("ID_LIKE", "").split() and target.systemd_version >= ID_LIKE_SINCE:
        return True, ""
    return False, f"ID={ext_id or '(none)'}, target has ID={host.get('ID')}"


def check_architecture(info: ImageInfo, targets: Sequence[Target]) -> None:
    arch = info.release.get("ARCHITECTURE")
    if arch is not None and arch not in ARCHITECTURES:
        return  # not an architecture at all: a finding of its own (lint.release_findings)
    allowed = sorted({t.architecture for t in targets} | {"_any"})
    if arch is not None and arch not in allowed:
        raise ConfigError(f"{info.path.name} is built for another architecture",
                          key="ARCHITECTURE", value=arch, allowed=allowed)


def default_targets(request: CheckRequest, candidates: Sequence[Target]) -> list[Target]:
    """The candidates every image is meant for; a ConfigError if none is."""
    chosen = [t for t in candidates
              if all(image_matches(info, t)[0] for info in request.images)]
    if not chosen:
        why = "; ".join(f"{info.path.name} is a {info.type} with "
                        f"ID={info.release.get('ID') or '(none)'}" for info in request.images)
        ids = ", ".join(sorted({f"{t.persona.name} (ID={t.os_release.get('ID')})"
                                for t in candidates}))
        raise ConfigError(f"no default target takes the image(s) ({why})", key="ID",
                          value=" ".join(info.release.get("ID", "") for info in request.images),
                          allowed=f"_any or a persona's ID: {ids}; or name targets with "
                                  "--target to run there anyway")
    return chosen


# --------------------------------------------------------------------------- scenario


def scenario_data(request: CheckRequest) -> dict[str, Any]:
    """The scenario, as the mapping its YAML file holds."""
    names = [info.name for info in request.images]
    if len(set(names)) != len(names):
        raise ConfigError("two images have the same extension-release name, so systemd would "
                          "merge only one of them", key="IMAGE", value=", ".join(names))
    sysexts = [i.name for i in request.images if i.type == "sysext"]
    confexts = [i.name for i in request.images if i.type == "confext"]
    merged: dict[str, list[str]] = {}
    if sysexts:
        merged["/usr"] = sysexts
    if confexts:
        merged["/etc"] = confexts
    data: dict[str, Any] = {
        "description": " ".join([
            "sysext-harness check of", ", ".join(i.path.name for i in request.images) + ":",
            "merged at runtime" + (" and at boot" if request.reboot else "") + ",",
            "no unit fails that did not fail before"
            + (", the named units are active" if request.units else "")
            + (", the commands succeed" if request.commands or request.test_script else "")
            + "."]),
        "tags": ["check"],
    }
    if confexts:
        data["applies_to"] = {"systemd": f">={CONFEXT_SINCE}",
                              "reason": "systemd-confext is new in 254"}
    data["extensions"] = {i.name: {"image": str(i.path.resolve()), "type": i.type}
                          for i in request.images}
    data["steps"] = _steps(request, merged)
    return data


def _steps(request: CheckRequest, merged: dict[str, list[str]]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{
        "name": "note the units that failed before the extension came (not held against it)",
        "run": f"mkdir -p {shlex.quote(str(Path(FAILED_BEFORE).parent))} && "
               f"{_FAILED_UNITS} > {FAILED_BEFORE}",
    }]
    for cert in request.trust:
        steps.append({"name": f"trust {cert.name} (/etc/verity.d)", "run": _trust_step(cert)})
    for index, info in enumerate(request.images):
        as_name = request.install_name(index)
        step: dict[str, Any] = {
            "name": f"install {info.path.name} as {as_name} "
                    f"(its release file is extension-release.{info.name})",
            "install": info.name, "as": as_name}
        if info.type == "confext":
            step["dir"] = CONFEXT_DIR
        steps.append(step)
    for index, info in enumerate(request.images):
        if info.format != "directory":
            steps.append({"name": f"the kernel of this target can read {info.path.name}",
                          "run": _readable_step(request.install_name(index), info)})
    for hierarchy, names in merged.items():
        tool = _TOOL[hierarchy]
        steps.append({"name": f"merged at runtime by {tool} refresh",
                      "run": f"{tool} refresh",
                      "expect": {"merged_into": {hierarchy: names}}})
    for index, info in enumerate(request.images):
        if info.type == "sysext":
            steps.append({"name": f"every ELF file of {info.path.name} finds its libraries "
                                  "on this target (ldd after the merge)",
                          "run": _libraries_step(request.install_name(index), info.format)})
    steps.append({"name": "systemd sees the extension's units", "run": "systemctl daemon-reload"})
    needs = [r for info in request.images for r in unit_requirements(info)]
    if needs:
        steps.append({"name": "every unit's programs, environment files, users and groups "
                              "exist on this target",
                      "run": _requirements_step(needs)})
    if request.reboot:
        steps.append({"name": "boot with the extension installed", "reboot": None})
        # The guest answers SSH before its boot transaction is done (ensure-sysext on
        # Flatcar restarts multi-user.target without waiting): judge units after it.
        steps.append({"name": "wait for the boot to finish (degraded is judged below)",
                      "run": "systemctl is-system-running --wait || true", "timeout": 300})
        services = {f"{_TOOL[hierarchy]}.service": "active" for hierarchy in merged}
        steps.append({"name": "merged at boot", "expect": {"merged_into": merged,
                                                          "unit_state": services}})
    else:
        for unit in request.units:
            steps.append({"name": f"start {unit}", "run": f"systemctl start {shlex.quote(unit)}"})
    steps.append({
        "name": "no unit failed that had not failed before the extension",
        "run": f"{_FAILED_UNITS} | comm -13 {FAILED_BEFORE} - > /tmp/failed-now\n"
               "if [ -s /tmp/failed-now ]; then\n"
               "  echo 'failed units:'; cat /tmp/failed-now\n"
               "  systemctl --no-pager --full status $(cat /tmp/failed-now) 2>&1 | tail -n 60\n"
               "  exit 1\n"
               "fi\n",
    })
    units = sorted({u for i in request.images for u in i.units} | set(request.units))
    if units:
        steps.append({
            "name": "the state of the extension's units (for the log)",
            "run": "systemctl show --no-pager -p Id,LoadState,ActiveState,SubState,"
                   f"UnitFileState {' '.join(shlex.quote(u) for u in units)}"})
    if request.units:
        steps.append({"name": "the named units are active",
                      "expect": {"unit_state": {u: "active" for u in request.units}}})
    for command in request.commands:
        steps.append({"name": f"run: {command}", "run": command})
    if request.test_script is not None:
        steps.append({"name": f"test script {request.test_script.name}",
                      "run": _script_step(request.test_script)})
    if request.os_update_targets:
        steps += _os_update_steps(request)
    return steps


#: Where the check's OS-update verdicts start: the CLI prints these lines as warnings.
NEXT_UPDATE = "next OS update:"


def _os_update_steps(request: CheckRequest) -> list[dict[str, Any]]:
    """Switch a reference target to its next OS release and say, per image, whether it is
    still merged and whether its release file says so (the rules of systemd's
    extension_release_validate: ID=_any; equal levels; else VERSION_ID must match)."""
    lines = ["fail=0", ". /usr/lib/os-release"]
    for info in request.images:
        kind = "SYSEXT" if info.type == "sysext" else "CONFEXT"
        root = "/usr/lib" if info.type == "sysext" else "/etc"
        rel = info.release
        lines += [
            f"name={shlex.quote(info.name)}; file={shlex.quote(info.path.name)}",
            f"ext_id={shlex.quote(rel.get('ID', ''))}; "
            f"ext_level={shlex.quote(rel.get(f'{kind}_LEVEL', ''))}; "
            f"ext_version={shlex.quote(rel.get('VERSION_ID', ''))}",
            f"host_level=${{{kind}_LEVEL:-}}; host_version=${{VERSION_ID:-}}",
            'if [ "$ext_id" = _any ]; then expect=kept; why="it says ID=_any"',
            'elif [ -z "$host_level" ] && [ -z "$host_version" ]; then expect=kept; '
            'why="the new OS has neither VERSION_ID nor a level"',
            'elif [ -n "$host_level" ] && [ -n "$ext_level" ]; then',
            f'  if [ "$ext_level" = "$host_level" ]; then expect=kept; why="its {kind}_LEVEL '
            f'$ext_level is the new OS\'s"; else expect=dropped; why="its {kind}_LEVEL '
            f'$ext_level is not the new OS\'s $host_level"; fi',
            'elif [ -n "$host_version" ]; then',
            '  if [ "$ext_version" = "$host_version" ]; then expect=kept; why="its VERSION_ID '
            'is the new OS\'s"; elif [ -z "$ext_version" ]; then expect=dropped; why="it sets '
            'neither a level the new OS has nor VERSION_ID"; else expect=dropped; why="it pins '
            'VERSION_ID=$ext_version, the new OS has VERSION_ID=$host_version"; fi',
            'else expect=kept; why="the new OS has no VERSION_ID to compare"; fi',
            f'if [ -e {root}/extension-release.d/extension-release."$name" ]; then '
            'now=kept; else now=dropped; fi',
            f'if [ "$now" = "$expect" ] && [ "$now" = dropped ]; then echo "{NEXT_UPDATE} '
            '$file is dropped, as its release file says ($why): users lose it at their next '
            'update unless a new image for the new OS comes with it"',
            f'elif [ "$now" = "$expect" ]; then echo "{NEXT_UPDATE} $file is still merged '
            '($why)"',
            'else echo "the next OS update $now $file, but its release file says it is '
            '$expect ($why)"; fail=1; fi',
        ]
    lines.append("exit $fail")
    only = {"targets": list(request.os_update_targets),
            "reason": "only reference targets have the next OS release (/usr slot B)"}
    return [
        {"name": "switch to the next OS release (/usr slot B) and reboot", "os_update": None,
         "when": only},
        {"name": "after the next OS update: merged or dropped as the release file says",
         "run": "\n".join(lines) + "\n", "when": only},
    ]


_REQUIREMENT_CHECK = """\
problems=0
need() {
  case $3 in
    executable) [ -x "$4" ] && return ;;
    command) PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin command -v "$4" \\
      >/dev/null && return ;;
    file) [ -f "$4" ] && return ;;
    user) getent passwd "$4" >/dev/null && return ;;
    group) getent group "$4" >/dev/null && return ;;
  esac
  case $3 in
    executable) why="no executable $4 in the image or on this target" ;;
    command) why="no command $4 in systemd's search path on this target" ;;
    file) why="no file $4 on this target (write $2=-$4 if it may be missing)" ;;
    *) why="no $3 $4 on this target (ship a sysusers.d entry for it, or use DynamicUser=yes)" ;;
  esac
  echo "$1: $2=$4: $why"; problems=1
}
"""


def _requirements_step(needs: Sequence[Requirement]) -> str:
    """Shell that checks, after the merge, what the image's units need from the target."""
    calls = "".join(f"need {shlex.quote(r.unit)} {r.key} {r.kind} {shlex.quote(r.value)}\n"
                    for r in needs)
    return (_REQUIREMENT_CHECK + calls + f"echo '{len(needs)} requirement(s) of the "
            "units checked'\nexit $problems\n")


def _find_installed(as_name: str) -> str:
    """Shell that sets $img to where the image was installed (the persona's directory)."""
    name = shlex.quote(as_name)
    return (f"img=\nfor d in /etc/extensions /run/extensions /var/lib/extensions "
            f"{CONFEXT_DIR}; do\n"
            f"  if [ -e \"$d\"/{name} ]; then img=\"$d\"/{name}; fi\ndone\n"
            f"[ -n \"$img\" ] || {{ echo 'not installed: '{name}; exit 1; }}\n")


def _readable_step(as_name: str, info: ImageInfo) -> str:
    """Shell that mounts the image read-only before the merge: when the target's kernel
    lacks its file system or compression, say so with the kernel's own words (the merge
    would fail with a bare mount error)."""
    what = shlex.quote(describe_filesystem(info.path))
    return (_find_installed(as_name) +
            'dir=$(mktemp -d)\n'
            'if out=$(systemd-dissect --read-only --mount "$img" "$dir" 2>&1); then\n'
            '  systemd-dissect --umount "$dir"; exit 0\nfi\n'
            f'echo "the kernel of this target cannot read $img ("{what}"): $out"\n'
            # the kernel's reason: util-linux 2.39+ prints the mount API's message, older
            # mounts leave it in the kernel log
            'if ! mount -o loop,ro "$img" "$dir" 2>&1; then dmesg | tail -n 3; '
            'else umount "$dir"; fi\n'
            "echo 'fix: build the image with a file system and compression every target "
            "kernel reads (squashfs with gzip, xz, zstd or lz4; erofs)'\nexit 1\n")


def _libraries_step(as_name: str, fmt: str) -> str:
    """Shell that finds the image as installed, reads its files (systemd-dissect mounts a
    raw image read-only a second time) and runs the target's ldd on each ELF file at its
    merged path: a library that neither the image nor the target has is `not found`."""
    mount = ('dir="$img"' if fmt == "directory" else
             'dir=$(mktemp -d) && systemd-dissect --read-only --mount "$img" "$dir" '
             '&& trap \'systemd-dissect --umount "$dir"\' EXIT')
    return (
        _find_installed(as_name) +
        f"{mount}\n"
        "missing=0; count=0\n"
        "for f in $(cd \"$dir\" && find usr opt -type f 2>/dev/null); do\n"
        "  [ \"$(head -c 4 \"$dir/$f\" | od -An -c | tr -d ' ')\" = 177ELF ] || continue\n"
        "  count=$((count + 1))\n"
        "  if ldd \"/$f\" 2>/dev/null | grep -q 'not found'; then\n"
        "    ldd \"/$f\" | grep 'not found' | sed \"s|^[[:space:]]*|/$f needs |\"; missing=1\n"
        "  fi\n"
        "done\n"
        "echo \"$count ELF file(s) read\"\n"
        "[ $missing = 0 ] || { echo 'a library above is neither in the image nor on this "
        "target: ship it in the image, or link the program statically'; exit 1; }\n")


def _trust_step(cert: Path) -> str:
    """Shell that installs `cert` (PEM or DER on the host) as a PEM file in /etc/verity.d."""
    from harness.extensions.signing import certificate_pem

    try:
        pem = certificate_pem(cert).decode()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not a readable X.509 certificate: {exc}", key="--trust",
                          value=str(cert), allowed="a PEM or DER certificate file") from None
    return _write_file(f"/etc/verity.d/check-{cert.stem}.crt", pem, "--trust", cert)


def _script_step(script: Path) -> str:
    try:
        text = script.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the test script: {exc}", key="--test",
                          value=str(script)) from None
    return (_write_file(_TEST_SCRIPT_PATH, text, "--test", script)
            + f"chmod 0755 {_TEST_SCRIPT_PATH}\n{_TEST_SCRIPT_PATH}\n")


def _write_file(dest: str, text: str, key: str, source: Path) -> str:
    """Shell that writes `text` to `dest` in the guest (a quoted here-document)."""
    if _HEREDOC_END in text:
        raise ConfigError(f"the file contains {_HEREDOC_END}", key=key, value=str(source))
    return (f"mkdir -p {shlex.quote(str(Path(dest).parent))}\n"
            f"cat > {shlex.quote(dest)} <<'{_HEREDOC_END}'\n{text.rstrip()}\n{_HEREDOC_END}\n")


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the written scenario reads like a hand one."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &id001 anchors: repeated lists are written out again


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def write_scenario(request: CheckRequest, directory: Path) -> Path:
    """Write the check as `directory/scenarios/check-NAME.yaml`; returns its path."""
    data = scenario_data(request)
    name = "-".join(info.name for info in request.images)
    path = directory / "scenarios" / f"check-{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = ", ".join(str(i.path) for i in request.images)
    header = (f"# Written by `sysext-harness check` on "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} for {images}.\n"
              "# An ordinary scenario (docs/scenarios.md): copy it into a scenarios/ "
              "directory to keep and extend it.\n")
    path.write_text(header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=96))
    return path


_UNIT_TYPES = ("service", "socket", "timer", "path", "mount", "automount", "swap", "target",
               "device", "slice", "scope")


def check_unit_names(units: Sequence[str]) -> tuple[str, ...]:
    """`--unit` values, checked to be unit names (a typo must not become a shell word)."""
    for unit in units:
        stem, _, kind = unit.rpartition(".")
        if not stem or kind not in _UNIT_TYPES or any(c.isspace() or c in "/'\"$`;&|"
                                                      for c in unit):
            raise ConfigError("not a unit name", key="--unit", value=unit,
                              allowed=f"NAME.TYPE with TYPE one of {', '.join(_UNIT_TYPES)}")
    return tuple(units)
