"""Writing tables to files: merging several into one, and writing imported published tables
(one file, or one per resolution into a folder). Every refusal comes before anything is written;
a file is written atomically and under its lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LutError
from ..jsonio import sha256_file
from ..locks import hold
from ..profilers.table import LatencyTable
from ..runs import check_writable
from .published import combine, is_published, table_name


@dataclass(frozen=True)
class Merged:
    table: LatencyTable
    sources: int
    replaced: str | None  # sha256 of the file --force replaced


def merge_files(paths: list[str], out: str, force: bool = False) -> Merged:
    """Tables of one device, backend and options (each checked as it loads) into one file at `out`.
    Published tables of two resolutions that time one op differently are refused, not overwritten."""
    if len(paths) < 2:
        raise LutError("merge needs at least two tables")
    target = Path(out)
    if target.is_dir():
        raise LutError(f"--out {target} is a directory; give a file path")
    if target.exists() and not force:
        raise LutError(f"{target} exists; pass --force to overwrite it or choose another --out")
    check_writable(target)
    tables = [LatencyTable.load(path) for path in paths]
    merged = tables[0]
    for path, table in zip(paths[1:], tables[1:]):
        try:
            merged = combine([merged, table]) if is_published(merged) and is_published(table) else merged.merge(table)
        except LutError as exc:
            raise LutError(f"cannot merge {path} into {paths[0]}: {exc}") from None
    LatencyTable.from_dict(merged.to_dict(), source="the merged table")  # what is written reads back
    with hold(target, "latency table"):
        if target.exists() and not force:  # written by another process since the check above
            raise LutError(f"{target} exists; pass --force to overwrite it or choose another --out")
        replaced = sha256_file(target) if target.is_file() else None
        merged.save(target)
    return Merged(merged, len(tables), replaced)


def write_imported(tables: list[LatencyTable], out: str, force: bool = False) -> list[tuple[Path, LatencyTable]]:
    """Imported tables into `out`: a folder (or a path ending in a separator) gets one file per
    table, named by table_name; a file gets them combined (refused where two resolutions time one
    op differently). Nothing is written if any target exists without --force."""
    target = Path(out)
    to_dir = target.is_dir() or str(out).endswith(("/", "\\"))
    try:
        targets = [(target / table_name(t), t) for t in tables] if to_dir else [(target, combine(tables))]
    except LutError as exc:
        raise LutError(f"{exc}: give --out a directory") from None
    existing = [str(path) for path, _ in targets if path.exists()]
    if existing and not force:
        raise LutError(f"{existing[0]} exists; pass --force to overwrite it or choose another --out")
    for path, table in targets:
        table.save(path)
    return targets
