"""systemd's own sysext tests, case by case: what a scenario's `source:` may cite.

The inventory is read from systemd's `test/units/` at v262.1 (Debian's `systemd-tests`
package). TEST-50-DISSECT.sysext.sh names its cases (`: "..."` lines, listed below;
`scripts/upstream-cases` prints them again for another version). The other files mark
theirs with comments or not at all, so their cases were titled by reading the file; they
live in `harness/data/upstream/FILE.tsv` (title, line range, the systemd versions of our
targets the case can apply to, what it checks). docs/behaviour.md maps every case to the
scenarios that cite it.
"""

# ruff: noqa: E501 (upstream's case titles are kept verbatim, one per line)
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

UPSTREAM_VERSION = "262.1"
UPSTREAM_TEST_FILES: tuple[str, ...] = (
    "TEST-50-DISSECT.sysext.sh", "TEST-50-DISSECT.dissect.sh", "TEST-50-DISSECT.DDI.sh",
    "TEST-72-SYSUPDATE.sh",
)

_SYSEXT_SH: tuple[str, ...] = (
    'No extension data in /var/lib/extensions.mutable/…, R/O hierarchy, mutability disabled by default, read-only merged',
    'No extension data in /var/lib/extensions.mutable/…, R/O hierarchy, mutability disabled by default, read-only merged, default, mount options',
    'No extension data in /var/lib/extensions.mutable/…, mutable hierarchy, mutability disabled by default, read-only merged',
    'No extension data in /var/lib/extensions.mutable/…, no hierarchy either, mutability disabled by default, read-only merged',
    'No extension data in /var/lib/extensions.mutable/…, empty hierarchy, mutability disabled by default, read-only merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, mutability disabled by default, read-only merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, auto-mutability, mutable merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, auto-mutability, mutable merged, mount options',
    'Extension data in /var/lib/extensions.mutable/…, missing hierarchy, auto-mutability, mutable merged',
    'Extension data in /var/lib/extensions.mutable/…, empty hierarchy, auto-mutability, mutable merged',
    '/var/lib/extensions.mutable/… is a symlink to other dir, R/O hierarchy, auto-mutability, mutable merged',
    '/var/lib/extensions.mutable/… is a symlink to the hierarchy itself, mutable hierarchy, auto-mutability, mutable merged',
    '/var/lib/extensions.mutable/… is a symlink to the hierarchy itself, R/O hierarchy, auto-mutability, expected fail',
    '/var/lib/extensions.mutable/… is a dangling symlink, auto-mutability, read-only merged',
    '/var/lib/extensions.mutable/… exists but ignored, mutability disabled explicitly, read-only merged',
    '/var/lib/extensions.mutable/… exists but is imported instead, read-only merged',
    '/var/lib/extensions.mutable/… does not exist, mutability enabled, mutable merged',
    'Malformed work_dir metadata is rejected without removing unrelated paths',
    '/var/lib/extensions.mutable/… does not exist, auto-mutability, read-only merged',
    '/var/lib/extensions.mutable/… does not exist, mutability enabled through env var, mutable merged',
    '/var/lib/extensions.mutable/… does not exist, auto-mutability enabled through env var, read-only merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, auto-mutability enabled through env var, mutable merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, mutability disabled through env var, read-only merged',
    '/var/lib/extensions.mutable/… exists but is imported through env var, read-only merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, mutability enabled through env var but overridden via CLI option, read-only merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, ephemeral mutability, mutable merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, ephemeral mutability through env var, mutable merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, ephemeral import mutability, mutable merged',
    'Extension data in /var/lib/extensions.mutable/…, R/O hierarchy, ephemeral import mutability through env var, mutable merged',
    'Extension data pointing to mutable hierarchy, ephemeral import mutability, expected fail',
    'Extension data pointing to mutable hierarchy, import mutability, expected fail',
    'Check if merging the hierarchy does not change its permissions, checking with --mutable=${mutable_mode}',
    'Check if merging an extension with matching ID succeeds',
    'Check if merging an extension that matches host ID_LIKE succeeds',
    'Check if merging fails in case of invalid mutable directory permissions',
    'Check if merging fails in case of --root= being an initrd but the extension is not for it',
    'Check config file support for --root=',
    'Check if verity user certs get loaded from --root=',
    'Check if following a relative extension directory symlink works with and without --root=',
    'Check if following an absolute extension directory symlink works with and without --root=',
    'Check if following a relative extension image symlink works with and without --root=',
    'Check if following an absolute extension image symlink works with and without --root=',
    'Check if vpick works for directory extensions',
    'Check if vpick works for image extensions',
    'Check if vpick works for directory extensions if .v is a relative symlink',
    'Check if vpick works for directory extensions if .v is an absolute symlink',
    'Check if vpick works for image extensions if .v is a relative symlink',
    'Check if vpick works for image extensions if .v is an absolute symlink',
    'Check if vpick works for directory extensions if inside a .v there is a relative symlink',
    'Check if vpick works for directory extensions if inside a .v there is an absolute symlink',
    'Check if vpick works for image extensions if inside a .v there is a relative symlink',
    'Check if vpick works for image extensions if inside a .v there is an absolute symlink',
    'Check if refresh skips correctly',
    'Check that refresh does a skip if verity image changes file handle but has same hash',
    'Check EXTENSION_RESTART_UNITS= (re)starts units after merge and stops vanished ones on unmerge',
    'Check EXTENSION_RELOAD_OR_RESTART_UNITS= reloads units after merge and stops vanished ones on unmerge',
    'Nested tmpfs submounts under the hierarchy survive merge/refresh/unmerge round-trip',
)

INVENTORY_DIR = Path(__file__).resolve().parent.parent / "data" / "upstream"


@dataclass(frozen=True)
class InventoryCase:
    """One case of a comment-marked upstream file, as its TSV row records it."""

    title: str
    lines: str  # line range in the upstream file, e.g. "450-454"
    applies: str  # "all", a constraint such as ">=257", or "n/a: why not on our targets"
    what: str  # what the case sets up and asserts

    @property
    def cannot_apply(self) -> bool:
        """Whether no reference target can run it (`applies` says "n/a: why")."""
        return self.applies.startswith("n/a")


def _tsv_rows(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of a tab-separated data file; `#` lines are comments."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != fields:
            raise ValueError(f"{path}:{number}: expected {fields} tab-separated fields, "
                             f"got {len(parts)}")
        rows.append((number, parts))
    return rows


def read_inventory(path: Path) -> tuple[InventoryCase, ...]:
    """The rows of one inventory file."""
    return tuple(InventoryCase(*parts) for _, parts in _tsv_rows(path, 4))


# Inventories of the comment-marked files, file -> its cases in the file's order.
INVENTORIES: Mapping[str, tuple[InventoryCase, ...]] = MappingProxyType({
    file: read_inventory(INVENTORY_DIR / (file.removesuffix(".sh") + ".tsv"))
    for file in UPSTREAM_TEST_FILES if file != "TEST-50-DISSECT.sysext.sh"
})

# File -> its cases, in the file's order.
UPSTREAM_CASES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "TEST-50-DISSECT.sysext.sh": _SYSEXT_SH,
    **{file: tuple(c.title for c in cases) for file, cases in INVENTORIES.items()},
})


def read_not_covered(path: Path) -> Mapping[tuple[str, str], str]:
    """(file, case) -> why no scenario mirrors it yet; every case must be one of the
    inventory's, so a renamed case cannot leave a stale reason behind."""
    reasons: dict[tuple[str, str], str] = {}
    for number, (file, case, reason) in _tsv_rows(path, 3):
        if case not in UPSTREAM_CASES.get(file, ()):
            raise ValueError(f"{path}:{number}: {file} has no case {case!r}")
        reasons[(file, case)] = reason
    return MappingProxyType(reasons)


# (file, case) of the cases no reference target can run.
CANNOT_APPLY: frozenset[tuple[str, str]] = frozenset(
    (file, row.title) for file, rows in INVENTORIES.items() for row in rows if row.cannot_apply)

# Applicable cases without a scenario yet, with the reason docs/behaviour.md shows.
NOT_COVERED: Mapping[tuple[str, str], str] = read_not_covered(INVENTORY_DIR / "not-covered.tsv")


def normalized(text: str) -> str:
    """Whitespace folded, as YAML folding and line wrapping change it."""
    return " ".join(text.split())
