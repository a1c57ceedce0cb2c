"""Mistakes an extension author makes that the host can see without booting anything.

`sysext-harness check` runs these on the image as the author ships it, before any VM
starts: a file name that does not match the release file (systemd refuses the image), a
release file with misspelled keys or an architecture systemd does not know. Each finding
says what is wrong, why it matters and how to fix it; errors fail the check, warnings
fail it only with `--strict` (docs/check.md lists every finding).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from harness.extensions.inspect import MERGED_TOP_LEVEL, ImageInfo, stem_of

#: Keys systemd reads from an extension-release file (os-release(5), systemd-sysext(8)),
#: per extension type; the others below are os-release fields it ignores but accepts.
SYSEXT_KEYS = ("ID", "VERSION_ID", "SYSEXT_LEVEL", "SYSEXT_SCOPE", "ARCHITECTURE",
               "EXTENSION_RELOAD_MANAGER", "SYSEXT_ID", "SYSEXT_VERSION_ID",
               "SYSEXT_IMAGE_ID", "SYSEXT_IMAGE_VERSION")
CONFEXT_KEYS = ("ID", "VERSION_ID", "CONFEXT_LEVEL", "CONFEXT_SCOPE", "ARCHITECTURE",
                "EXTENSION_RELOAD_MANAGER", "CONFEXT_ID", "CONFEXT_VERSION_ID",
                "CONFEXT_IMAGE_ID", "CONFEXT_IMAGE_VERSION")
INFORMATIONAL_KEYS = ("NAME", "PRETTY_NAME", "VERSION", "VERSION_CODENAME", "ID_LIKE",
                      "BUILD_ID", "IMAGE_ID", "IMAGE_VERSION", "HOME_URL", "DOCUMENTATION_URL",
                      "SUPPORT_URL", "BUG_REPORT_URL", "VENDOR_NAME", "VENDOR_URL",
                      "ANSI_COLOR", "LOGO", "CPE_NAME", "VARIANT", "VARIANT_ID",
                      "PORTABLE_PREFIXES")
#: systemd's architecture names (systemd.unit(5) ConditionArchitecture=).
ARCHITECTURES = ("x86", "x86-64", "arm", "arm64", "arc", "arc-be", "alpha", "ia64",
                 "loongarch64", "m68k", "mips", "mips-le", "mips64", "mips64-le", "parisc",
                 "parisc64", "ppc", "ppc64", "ppc64-le", "ppc-le", "riscv32", "riscv64",
                 "s390", "s390x", "sh", "sh64", "sparc", "sparc64", "tilegx", "_any")
#: How other tools spell an architecture, and systemd's name for it.
ARCHITECTURE_ALIASES = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "arm64",
                        "i386": "x86", "i686": "x86", "armhf": "arm", "ppc64le": "ppc64-le",
                        "riscv64gc": "riscv64"}


@dataclass(frozen=True)
class Finding:
    """One mistake: `error` fails the check, `warning` only with --strict."""

    severity: str  # "error" or "warning"
    code: str  # a stable name for CI, e.g. "name-mismatch" (docs/check.md)
    image: str  # the image's file name
    message: str  # what is wrong and why it matters
    fix: str  # what to do about it

    def text(self) -> str:
        return f"{self.severity}: {self.image}: {self.message} Fix: {self.fix}"

    def as_json(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "image": self.image,
                "message": self.message, "fix": self.fix}


def install_name(info: ImageInfo, as_name: str | None) -> str:
    """The name the image is installed under: `--as`, else its own file name."""
    return as_name or info.path.name


def name_findings(info: ImageInfo, as_name: str | None) -> list[Finding]:
    """systemd takes an image only if its name matches its release file
    (extension-release.NAME for NAME.raw; sysext-behaviour reference §1.3): 252 then fails
    the whole merge ("No medium found"), later versions skip the image."""
    name = install_name(info, as_name)
    stem = name if info.format == "directory" else stem_of(name)
    if stem == info.release_name:
        return []
    wanted = info.release_name if info.format == "directory" else f"{info.release_name}.raw"
    how = "installed as" if as_name else "shipped as"
    return [Finding(
        "error", "name-mismatch", info.path.name,
        f"{how} {name}, it needs extension-release.{stem}, but it holds "
        f"extension-release.{info.release_name}: systemd refuses it (on 252 the whole merge "
        f"fails with \"No medium found\").",
        f"ship it as {wanted} (or link it as {wanted}, as sysext-bakery does, and check it "
        f"with --as {wanted}), or rename the release file to extension-release.{stem}.")]


def release_findings(info: ImageInfo) -> list[Finding]:
    """Misspelled or misplaced keys and architectures systemd does not know."""
    found: list[Finding] = []
    own = SYSEXT_KEYS if info.type == "sysext" else CONFEXT_KEYS
    other = CONFEXT_KEYS if info.type == "sysext" else SYSEXT_KEYS
    release_file = f"extension-release.{info.release_name}"
    for key in info.release:
        if key in own or key in INFORMATIONAL_KEYS:
            continue
        if key in other:
            mine = (key.replace("CONFEXT", "SYSEXT") if info.type == "sysext"
                    else key.replace("SYSEXT", "CONFEXT"))
            found.append(Finding(
                "warning", "key-for-other-type", info.path.name,
                f"{release_file} sets {key}, which only a "
                f"{'confext' if info.type == 'sysext' else 'sysext'} reads; this {info.type} "
                f"ignores it.",
                f"use {mine}."))
            continue
        close = difflib.get_close_matches(key, (*own, *INFORMATIONAL_KEYS), n=1, cutoff=0.75)
        found.append(Finding(
            "warning" if not close else "error", "unknown-key", info.path.name,
            f"{release_file} sets {key}, which systemd does not know"
            + (f" (did you mean {close[0]}?)" if close else "")
            + ": it is ignored, so the image is matched without it.",
            f"spell it {close[0]}." if close else "remove it, or keep it if only your own "
                                                  "tools read it."))
    arch = info.release.get("ARCHITECTURE")
    if arch is not None and arch not in ARCHITECTURES:
        better = ARCHITECTURE_ALIASES.get(arch)
        found.append(Finding(
            "error", "unknown-architecture", info.path.name,
            f"{release_file} sets ARCHITECTURE={arch}, which is not one of systemd's "
            "architecture names: systemd refuses the image on every machine.",
            f"write ARCHITECTURE={better}." if better else
            f"use one of {', '.join(ARCHITECTURES)}."))
    return found


def merge_findings(info: ImageInfo) -> list[Finding]:
    """Top-level entries the merge leaves out: files put there never reach the host."""
    ignored = info.ignored_entries()
    if not ignored:
        return []
    merged = [f"/{d}" for d in MERGED_TOP_LEVEL[info.type]]
    return [Finding(
        "warning", "not-merged", info.path.name,
        f"{info.type} merges only {', '.join(merged)}; these top-level entries never reach "
        f"the host: {', '.join(ignored)}.",
        f"move them under {' or '.join(merged)}, or leave them out.")]


def host_findings(info: ImageInfo, as_name: str | None = None) -> list[Finding]:
    """Everything the host can tell about one image before anything boots."""
    return [*name_findings(info, as_name), *release_findings(info), *unit_findings(info),
            *merge_findings(info)]


# ------------------------------------------------------------------------------- units

# Lines by which one unit starts another (a drop-in or a unit of the image).
_STARTS = re.compile(r"^\s*(Wants|Requires|Upholds|BindsTo|Requisite|Also|Unit|Sockets)"
                     r"\s*=\s*(.+)$", re.MULTILINE)
_INSTALL = re.compile(r"^\s*\[Install\]\s*$(.*?)(?=^\s*\[|\Z)", re.MULTILINE | re.DOTALL)
_INSTALL_TARGETS = re.compile(r"^\s*(WantedBy|RequiredBy|UpheldBy)\s*=\s*(\S+)", re.MULTILINE)
_ACTIVATORS = (".socket", ".timer", ".path")


def _started_names(info: ImageInfo) -> set[str]:
    """Every unit the image starts by itself: through a .wants/.requires/.upholds link, a
    dependency in a drop-in or in one of its units, or a started .socket/.timer/.path of
    the same name."""
    started = {name for _dir, name, _shipped in info.unit_links}
    for text in [t for _n, t in info.drop_ins] + [t for _n, t in info.unit_texts]:
        for _key, value in _STARTS.findall(text):
            started.update(value.split())
    for name in list(started):
        stem, dot, kind = name.rpartition(".")
        if dot and f".{kind}" in _ACTIVATORS:
            started.add(f"{stem}.service")
    return started


def unit_findings(info: ImageInfo) -> list[Finding]:
    """Units that never start from a sysext (systemd runs no `systemctl enable` for an
    extension: what its [Install] section says happens only through links or drop-ins the
    image ships) and links to units the image does not ship."""
    found: list[Finding] = []
    started = _started_names(info)
    unit_dir = "usr/lib/systemd/system" if info.type == "sysext" else "etc/systemd/system"
    for name, text in info.unit_texts:
        install = _INSTALL.search(text)
        targets = _INSTALL_TARGETS.findall(install.group(1)) if install else []
        if not targets or name in started or "@." in name:
            continue
        key, target = targets[0]
        kind = {"WantedBy": "wants", "RequiredBy": "requires", "UpheldBy": "upholds"}[key]
        found.append(Finding(
            "warning", "unit-never-started", info.path.name,
            f"{name} says {key}={target} in [Install], but nothing in the image starts it: "
            "systemd does not run `systemctl enable` for an extension, so it never starts "
            "at boot.",
            f"ship the link {unit_dir}/{target}.{kind}/{name} -> ../{name}, or a drop-in "
            f"{unit_dir}/{target}.d/10-{name.rsplit('.', 1)[0]}.conf with "
            f"[Unit] Upholds={name} (and EXTENSION_RELOAD_MANAGER=1 where the OS does not "
            "reload the manager after the merge)."))
    for directory, name, shipped in info.unit_links:
        if not shipped:
            found.append(Finding(
                "warning", "link-to-missing-unit", info.path.name,
                f"{unit_dir}/{directory}/{name} starts {name}, which the image does not ship: "
                "it works only on targets that have that unit.",
                f"ship {name} in {unit_dir}, or drop the link."))
    return found


# -------------------------------------------------------- what units need on the target

_EXEC_KEYS = ("ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload",
              "ExecStop", "ExecStopPost")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class Requirement:
    """Something a unit of the image needs from the merged target: an `executable` (an
    absolute path), a `command` (looked up in systemd's search path), a `file` (an
    EnvironmentFile= without `-`), a `user` or a `group`."""

    unit: str
    key: str  # the unit file's key, e.g. ExecStart
    kind: str
    value: str


def _assignments(text: str) -> list[tuple[str, str]]:
    """KEY=value lines of a unit file (continuation lines joined), in order."""
    joined = re.sub(r"\\\n", " ", text)
    return [(m.group(1), m.group(2)) for line in joined.splitlines()
            if (m := _ASSIGNMENT.match(line)) and not line.lstrip().startswith(("#", ";"))]


def unit_requirements(info: ImageInfo) -> list[Requirement]:
    """What every unit the image ships needs from the target, read from its unit file.
    Values with specifiers (`%`) or variables (`$`) are left out: only the guest's
    manager can expand them. Users and groups a sysusers.d file of the image declares, and
    those of DynamicUser= units, are not required."""
    out: list[Requirement] = []
    for unit, text in info.unit_texts:
        pairs = _assignments(text)
        dynamic = any(k == "DynamicUser" and v.lower() in ("yes", "true", "1", "on")
                      for k, v in pairs)
        for key, value in pairs:
            if key in _EXEC_KEYS:  # the program must be plain; its arguments may not be
                words = value.lstrip("@-:+!|").split()
                if words and "%" not in words[0] and "$" not in words[0]:
                    out.append(Requirement(unit, key, "executable" if words[0].startswith("/")
                                           else "command", words[0]))
            elif not value or "%" in value or "$" in value:
                continue
            elif key == "EnvironmentFile" and not value.startswith("-"):
                out.append(Requirement(unit, key, "file", value))
            elif key in ("User", "Group") and not dynamic and not value.isdigit() \
                    and value not in info.sysusers and value != "root":
                out.append(Requirement(unit, key, key.lower(), value))
    return out
