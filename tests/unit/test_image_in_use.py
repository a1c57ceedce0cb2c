"""Image directories another harness process uses survive a rebuild of the same target."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from harness.targets import inuse


def _image_dir(root: Path, name: str) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "manifest.json").write_text("{}")
    return directory


def test_unused_directory_is_removed(tmp_path: Path) -> None:
    old = _image_dir(tmp_path, "refos-257-flatcar-0000000000000000")
    assert inuse.remove_unless_used(old)
    assert not old.exists()


def test_directory_held_by_another_process_is_kept(tmp_path: Path) -> None:
    old = _image_dir(tmp_path, "refos-257-flatcar-1111111111111111")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from harness.targets import inuse
            assert inuse.hold(Path({str(old)!r}))
            print("held", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not inuse.remove_unless_used(old)
        assert (old / "manifest.json").exists()
    finally:
        holder.communicate("")  # the holder exits, and its lock goes with it
    assert inuse.remove_unless_used(old)
    assert not old.exists()


def test_hold_refuses_a_missing_or_incomplete_directory(tmp_path: Path) -> None:
    assert not inuse.hold(tmp_path / "gone")
    incomplete = tmp_path / "refos-252-fcos-2222222222222222"
    incomplete.mkdir()
    assert not inuse.hold(incomplete)
    complete = _image_dir(tmp_path, "refos-252-fcos-3333333333333333")
    assert inuse.hold(complete)
    assert inuse.hold(complete)  # idempotent within a process
