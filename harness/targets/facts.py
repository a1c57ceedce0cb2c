"""What an image target is, as the booted guest says: os-release, systemd, architecture.

A real distribution image carries nothing of the harness, so the harness asks it once:
`FACTS_COMMAND` runs over SSH after the first boot, `parse_facts` reads the answer, and the
result is kept in the cache under the image's sha256, so later runs (and pytest's
collection, which decides applicability before any VM runs) need not boot to know it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from harness.buildcache import cache_dir
from harness.errors import HarnessError
from harness.targets.model import GuestFacts

# `uname -m` -> systemd's ARCHITECTURE= spelling (systemd's src/basic/architecture.c).
UNAME_TO_SYSTEMD = {
    "x86_64": "x86-64", "i686": "x86", "i586": "x86", "i386": "x86", "aarch64": "arm64",
    "armv7l": "arm", "ppc64le": "ppc64-le", "ppc64": "ppc64", "s390x": "s390x",
    "riscv64": "riscv64", "loongarch64": "loongarch64",
}
_SEPARATOR = "--sysext-harness-facts--"
FACTS_COMMAND = "; ".join([
    "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release",
    f"echo {_SEPARATOR}",
    "systemctl --version | head -n 1",
    f"echo {_SEPARATOR}",
    "uname -m",
    "uname -r",
    f"echo {_SEPARATOR}",
    "if command -v systemd-sysupdate >/dev/null || test -x /usr/lib/systemd/systemd-sysupdate;"
    " then echo yes; else echo no; fi",
])


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): KEY=value lines, values optionally quoted with shell quoting."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        fields[key] = words[0] if len(words) == 1 else " ".join(words)
    return fields


def parse_facts(output: str) -> GuestFacts:
    """Read `FACTS_COMMAND`'s output; a guest that answers otherwise is an error."""
    parts = output.split(_SEPARATOR + "\n")
    if len(parts) != 4:
        raise HarnessError(f"unexpected answer to the facts command:\n{output[-2000:]}")
    os_release_text, systemctl, uname, sysupdate = parts
    version = re.match(r"systemd (\d+)", systemctl.strip())
    if version is None:
        raise HarnessError(f"cannot read the systemd version from {systemctl.strip()!r}")
    machine, _, kernel = uname.strip().partition("\n")
    os_release = parse_os_release(os_release_text)
    if "ID" not in os_release:
        raise HarnessError(f"the guest's os-release has no ID=:\n{os_release_text}")
    return GuestFacts(os_release=os_release, systemd_version=int(version.group(1)),
                      architecture=UNAME_TO_SYSTEMD.get(machine.strip(), machine.strip()),
                      sysupdate=sysupdate.strip() == "yes", kernel=kernel.strip())


def _facts_path(image_digest: str) -> Path:
    return cache_dir() / "facts" / f"{image_digest}.json"


def cached_facts(image_digest: str) -> GuestFacts | None:
    try:
        data = json.loads(_facts_path(image_digest).read_text())
        return GuestFacts(**data)
    except (OSError, ValueError, TypeError):
        return None


def store_facts(image_digest: str, facts: GuestFacts) -> None:
    path = _facts_path(image_digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts.__dict__, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
