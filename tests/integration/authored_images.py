"""Extension images as authors ship them, for the `check` tests: a squashfs with a program
and a oneshot unit started through a `multi-user.target.d` drop-in (sysext-bakery style)."""

from __future__ import annotations

from pathlib import Path

from harness.run import run


def unit_extension(tmp_path: Path, name: str, exec_start: str, drop_in: str,
                   file_name: str | None = None) -> Path:
    """`name`'s image: /usr/bin/NAME prints a greeting, NAME.service runs `exec_start`,
    and the drop-in line (`Upholds=` or `Wants=`) starts it at boot."""
    root = tmp_path / name
    (root / "usr/lib/extension-release.d").mkdir(parents=True)
    (root / f"usr/lib/extension-release.d/extension-release.{name}").write_text(
        "ID=flatcar\nSYSEXT_LEVEL=1.0\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / f"usr/bin/{name}").write_text(f"#!/bin/sh\necho hello from {name}\n")
    (root / f"usr/bin/{name}").chmod(0o755)
    units = root / "usr/lib/systemd/system"
    (units / "multi-user.target.d").mkdir(parents=True)
    (units / f"{name}.service").write_text(
        f"[Unit]\nDescription={name}\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        f"ExecStart={exec_start}\n")
    (units / f"multi-user.target.d/10-{name}.conf").write_text(f"[Unit]\n{drop_in}\n")
    out = tmp_path / (file_name or f"{name}-1.0-x86-64.raw")
    run(["mksquashfs", root, out, "-quiet", "-no-progress", "-all-root"])
    return out
