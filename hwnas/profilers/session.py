"""Profile every unique op of a space into a LUT file, checkpointed so nothing finished is lost.

`profile_space` is what `hwnas profile` runs. The table file is written atomically right away
(metadata only), then after every finished entry, and once more on any exit: a Ctrl-C or an
exception saves what was finished, and a kill -9 loses at most the op being measured. With
`resume=True` an existing file is loaded, checked to be from the same backend, options, device,
batch and dtype, and only its missing keys are measured.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..build import BuildConfig, Head, Stem, build_block
from ..errors import HwnasError, LutError, ProfileError
from ..latency_tables.table import LatencyTable, Measurement, OpKey
from ..latency_tables.validation import REFERENCE_BLOCK, REFERENCE_SHAPE  # also the load guard's reference op
from ..spaces import OpInstance, SearchSpace
from .base import Profiler
from .fingerprint import device_slug
from .statistics import LoadGuard


def op_module(op: OpInstance, cfg: BuildConfig) -> nn.Module:
    """The module an OpInstance measures: timm's stem, one block from the builder, or the head."""
    if op.kind == "stem":
        return Stem(cfg, in_chans=op.in_chs)
    if op.kind == "head":
        num_classes = int(op.spec.split("_")[1][1:])
        return Head(op.in_chs, cfg, num_classes)
    return build_block(op.spec, op.in_chs, cfg)


def space_keys(space: SearchSpace, batch: int = 1, dtype: str = "float32") -> list[tuple[OpKey, OpInstance]]:
    """(key, op) for every unique op of the space (stem, blocks, heads); ops whose canonical keys
    coincide are measured once."""
    seen: dict[str, tuple[OpKey, OpInstance]] = {}
    for op in space.all_ops():
        key = OpKey.for_op(op, space.build_config.name, batch=batch, dtype=dtype)
        seen.setdefault(key.text, (key, op))
    return list(seen.values())


def default_table_name(profiler: Profiler, device: dict) -> str:
    """`<device>_<backend>[_t<threads>][_<precision>][_cl][_denormals]...json`: what an `--out` folder
    gets; options off their default show in the name, so two tables never take each other's."""
    options = profiler.options()
    parts = [device_slug(device), profiler.name]
    if "threads" in options:
        parts.append(f"t{options['threads']}")
    if options.get("precision") not in (None, "fp32", "float32"):
        parts.append(str(options["precision"]))
    if options.get("channels_last"):
        parts.append("cl")
    if options.get("flush_denormal") is False:
        parts.append("denormals")
    if options.get("graph_optimization_level") not in (None, "all"):
        parts.append(f"opt-{options['graph_optimization_level']}")
    return "_".join(parts) + ".json"


@dataclass(frozen=True)
class ProfileReport:
    """What one `profile_space` call did."""

    path: Path
    total: int
    measured: int
    skipped: int
    remeasured: int
    elapsed_s: float


def _check_resumable(existing: LatencyTable, fresh: LatencyTable, path: Path) -> None:
    difference = existing.first_difference(fresh)
    if difference:
        name, mine, theirs = difference
        raise LutError(
            f"cannot resume {path}: it was profiled with {name} {mine!r}, this run has {theirs!r}; "
            "rerun with the same backend, options and machine, or choose another --out"
        )


def open_table(profiler: Profiler, out: Path, batch: int, resume: bool) -> LatencyTable:
    """A new table for this profiler, or with `resume` the existing one at `out` (checked)."""
    fresh = LatencyTable(
        backend=profiler.name,
        backend_options=profiler.options(),
        device=profiler.fingerprint(),
        batch=batch,
        dtype=profiler.dtype,
        statistics=profiler.stats.to_dict(),
    )
    if out.exists():
        if not resume:
            raise ProfileError(f"{out} exists; pass --resume to continue it or choose another --out")
        existing = LatencyTable.load(out)
        _check_resumable(existing, fresh, out)
        return existing
    return fresh


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if out.is_dir():
        raise ProfileError(f"--out {out} is a folder; name a .json file in it")
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ProfileError(f"cannot write {out}: {probe} is not a writable folder; choose another --out")


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="op", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)


def profile_space(
    space: SearchSpace,
    profiler: Profiler,
    out: str | os.PathLike,
    *,
    batch: int = 1,
    resume: bool = False,
    progress: bool = True,
    load_guard: bool = True,
    max_remeasure: int = 2,
    on_entry: Callable[[OpKey, Measurement], None] | None = None,
) -> ProfileReport:
    """Measure every unique op of `space` missing from the table at `out`; see the module doc."""
    if not isinstance(batch, int) or batch < 1:
        raise ProfileError(f"batch must be a positive integer, got {batch!r}; use e.g. --batch 1")
    out = Path(out)
    _check_writable(out)
    table = open_table(profiler, out, batch, resume)
    table.note_space(space.name, space.resolution)
    keys = space_keys(space, batch, table.dtype)
    todo = [(k, op) for k, op in keys if k not in table]
    started = time.perf_counter()
    measured = remeasured = 0
    torch.manual_seed(0)
    guard_runner = guard = None
    if todo and table.overhead_ms is None:
        table.overhead_ms = profiler.overhead_ms()
    if load_guard and todo:
        cfg = BuildConfig(stem_size=16, num_features=16)
        guard_runner = profiler.prepare(build_block(REFERENCE_BLOCK, REFERENCE_SHAPE[1], cfg), REFERENCE_SHAPE)
        guard = LoadGuard(guard_runner.time_call, calls=max(5, min(15, profiler.stats.min_repeats)))
        guard.ratio()
    bar = _progress(len(keys), len(keys) - len(todo), f"{profiler.name} {space.name}@{space.resolution}",
                    progress and bool(todo))
    try:
        try:
            table.save(out)  # metadata first: the file exists and is valid from the start
        except OSError as exc:
            raise ProfileError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None
        for key, op in todo:
            bar.set_postfix_str(op.label, refresh=False)
            entry, redone = _measure_op(profiler, space, key, op, guard, max_remeasure, len(table), out)
            table.put(key, entry)
            table.save(out)
            measured += 1
            remeasured += bool(redone)
            if on_entry:
                on_entry(key, entry)
            bar.update(1)
    finally:
        bar.close()
        if guard_runner is not None:
            guard_runner.close()
        if out.exists():
            table.save(out)
    return ProfileReport(out, len(keys), measured, len(keys) - len(todo), remeasured, time.perf_counter() - started)


def _measure_op(profiler: Profiler, space: SearchSpace, key: OpKey, op: OpInstance, guard: LoadGuard | None,
                max_remeasure: int, done: int, out: Path) -> tuple[Measurement, int]:
    """Measure one op; while the load guard says the machine was busy (before or after the op),
    measure again (at most `max_remeasure` times, after a short pause) and keep the attempt
    taken under the least load."""
    best: tuple[float, Measurement] | None = None
    before = guard.last_ratio if guard else 1.0
    for attempt in range(max_remeasure + 1):
        try:
            module = op_module(op, space.build_config)
            entry = profiler.measure(module, key.shape)
        except HwnasError as exc:
            raise type(exc)(f"{op.label}: {exc} ({done} finished entries are saved in {out})") from exc
        except Exception as exc:
            raise ProfileError(
                f"measuring {op.label} on {profiler.name} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                f"{done} finished entries are saved in {out}; rerun with --resume once fixed"
            ) from exc
        after = guard.ratio() if guard else 1.0
        load = max(before, after)
        if best is None or load < best[0]:
            best = (load, entry)
        if guard is None or not guard.busy(load):
            break
        time.sleep(0.2)
        before = guard.ratio()
    load, entry = best
    if attempt:
        entry = Measurement(**{**entry.to_dict(), "remeasured": attempt})
    return entry, attempt
