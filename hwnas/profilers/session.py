"""Profile every unique op of a space into a LUT file, timed so that machine drift cancels out,
checkpointed so that nothing finished is lost.

`profile_space` is what `hwnas profile` runs. Ops are prepared in chunks (`chunk_size` sessions
open at a time) and timed in interleaved rounds against the table's reference network
(`hwnas.profilers.interleaved`, `hwnas.core.reference`): every op's entry is the median of its
rounds, each rescaled to the reference's time, so an op timed while the machine ran 20% slow
is not 20% off. The reference's time is fixed by the first chunk of a new table; resumed and
added ops are expressed at it.

The table file is written atomically right away (metadata only), then after every timed
segment (finished rounds of unfinished ops go to its `pending` section) and every finished
chunk, and once more on any exit: a Ctrl-C, an exception or a kill -9 loses at most one
segment's timing. With `resume=True` an existing file is loaded, checked to be from the same
backend, options, device, batch and dtype; its missing ops are measured, pending rounds
continued.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core.build import BuildConfig, Head, Stem, build_block
from ..core.cells import cell_op_module
from ..core.darts import darts_op_module
from ..errors import HwnasError, ProfileError
from ..locks import hold
from .table import LatencyTable, Measurement, OpKey
from ..core.reference import new_reference, reference_model, set_reference_time
from ..core.spaces import OpInstance, SearchSpace
from .base import Profiler, Runner
from ..runtimes.fingerprint import device_slug
from .interleaved import RoundRecord, RoundsConfig, reference_median, summarise, time_rounds


def op_module(op: OpInstance, cfg: BuildConfig) -> nn.Module:
    """The module an OpInstance measures: timm's stem, one block from the builder, or the head
    (for a cell space's network, its own stem, ops and head: hwnas.core.cells, hwnas.core.darts)."""
    if cfg.family == "nb201":
        return cell_op_module(op)
    if cfg.family == "darts":
        return darts_op_module(op)
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
    if options.get("clock") == "wall" and options.get("threads") == 1:
        parts.append("wall")
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
    reference_ms: float | None = None
    drift: float | None = None  # slowest / fastest local reference time during this run


def open_table(profiler: Profiler, out: Path, batch: int, resume: bool) -> LatencyTable:
    """A new table for this profiler, or with `resume` the existing one at `out` (checked)."""
    fresh = LatencyTable(
        backend=profiler.name,
        backend_options=profiler.options(),
        device=profiler.fingerprint(),
        batch=batch,
        dtype=profiler.dtype,
        statistics=None,
    )
    if out.exists():
        if not resume:
            raise ProfileError(f"{out} exists; pass --resume to continue it or choose another --out")
        existing = LatencyTable.load(out)
        existing.check_compatible(fresh, f"cannot resume {out}: it was profiled with {{name}} {{mine!r}}, this run has "
                                         "{theirs!r}; rerun with the same backend, options and machine, or choose "
                                         "another --out")
        return existing
    return fresh


def table_and_todo(profiler, out: Path, space: SearchSpace, batch: int, resume: bool, rounds: RoundsConfig,
                   seed: int) -> tuple[LatencyTable, list, list]:
    """The table at `out` (new, or resumed and checked), noted with the space, its rounds settings
    and reference network; every op key of the space; and those still to measure: unfinished ops
    first, so that their finished rounds are used up, the rest in a seeded order. `profiler`
    needs `name`, `options()`, `fingerprint()` and `dtype` only (a Ray actor's stand-in will do)."""
    table = open_table(profiler, out, batch, resume)
    table.note_space(space.name, space.resolution)
    table.rounds = table.rounds or rounds.to_dict()
    if table.reference is None:
        table.reference = new_reference(space)
    keys = space_keys(space, batch, table.dtype)
    todo = [(k, op) for k, op in keys if k not in table]
    random.Random(seed).shuffle(todo)
    todo.sort(key=lambda item: item[0].text not in table.pending)
    return table, keys, todo


def check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if out.is_dir():
        raise ProfileError(f"--out {out} is a folder; name a .json file in it")
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ProfileError(f"cannot write {out}: {probe} is not a writable folder; choose another --out")


def _progress(total: int, initial: int, desc: str, enabled: bool, unit: str = "op"):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)


@dataclass(frozen=True)
class ProfileSettings:
    """How a space is profiled into a table, by one profiler here or by Ray actors: the batch,
    whether to continue the table at `out`, the interleaved rounds and their seed, a progress bar."""

    batch: int = 1
    resume: bool = False
    rounds: RoundsConfig | None = None  # None: RoundsConfig()
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise ProfileError(f"batch must be a positive integer, got {self.batch!r}; use e.g. --batch 1")
        if self.rounds is None:
            object.__setattr__(self, "rounds", RoundsConfig())


def profile_to(space: SearchSpace, backend: str, options: dict, out: str, settings: ProfileSettings = ProfileSettings(),
               stats=None) -> ProfileReport:
    """Profile `space` on `backend` (with `options`) into the table `out`; a folder (or a path
    ending in a separator) gets the table's default name. Under a lock on the table: a second
    profile onto it is refused, not interleaved."""
    from . import get_profiler

    with get_profiler(backend, stats=stats, **options) as profiler:
        path = Path(out)
        if path.is_dir() or str(out).endswith(("/", "\\")):
            path = path / default_table_name(profiler, profiler.fingerprint())
        with hold(path, "latency table"):
            return profile_space(space, profiler, path, settings)


def profile_space(
    space: SearchSpace,
    profiler: Profiler,
    out: str | os.PathLike,
    settings: ProfileSettings = ProfileSettings(),
    *,
    checkpoint_every_s: float = 1.0,
    on_entry: Callable[[OpKey, Measurement], None] | None = None,
) -> ProfileReport:
    """Measure every unique op of `space` missing from the table at `out`; see the module doc."""
    batch, resume, rounds, seed, progress = (settings.batch, settings.resume, settings.rounds, settings.seed,
                                             settings.progress)
    out = Path(out)
    check_writable(out)
    table, keys, todo = table_and_todo(profiler, out, space, batch, resume, rounds, seed)
    started = time.perf_counter()
    torch.manual_seed(0)
    if todo and table.overhead_ms is None:
        table.overhead_ms = profiler.overhead_ms()
    bar = _progress(len(keys) * rounds.rounds, (len(keys) - len(todo)) * rounds.rounds,
                    f"{profiler.name} {space.name}@{space.resolution}", progress and bool(todo), unit="op-round")
    saver = Checkpoint(table, out, checkpoint_every_s)
    measured = remeasured = 0
    locals_seen: list[float] = []
    reference_runner = None
    try:
        saver.save()  # metadata first: the file exists and is valid from the start
        if todo:
            model, shape = reference_model(table.reference, batch)
            reference_runner = profiler.prepare(model, shape)
        for start in range(0, len(todo), rounds.chunk_size):
            chunk = todo[start:start + rounds.chunk_size]
            finished_rounds = pending_rounds(table, chunk)
            bar.update(sum(len(v) for v in finished_rounds.values()))

            def checkpoint(records, chunk_keys=tuple(k.text for k, _ in chunk)):
                for text in chunk_keys:
                    if records[text]:
                        table.pending[text] = [r.to_dict() for r in records[text]]
                saver.maybe_save()

            timing = time_chunk(profiler, space.build_config, chunk, reference_runner, rounds, seed=seed + start,
                                records=finished_rounds, on_segment=checkpoint, progress=bar.update,
                                done=len(table), out=out)
            for key, entry in record_chunk(table, [k for k, _ in chunk], timing):
                measured += 1
                remeasured += bool(entry.remeasured)
                if on_entry:
                    on_entry(key, entry)
            locals_seen += timing.reference_times()
            saver.save()
    finally:
        bar.close()
        if reference_runner is not None:
            reference_runner.close()
        if out.exists():
            saver.save()
    drift = max(locals_seen) / min(locals_seen) if locals_seen else None
    return ProfileReport(out, len(keys), measured, len(keys) - len(todo), remeasured, time.perf_counter() - started,
                         (table.reference or {}).get("ms"), drift)


class Checkpoint:
    """Atomic saves of the table: now, or at most every `every_s` seconds (checkpoints of rounds)."""

    def __init__(self, table: LatencyTable, out: Path, every_s: float):
        self.table, self.out, self.every_s, self.last = table, out, every_s, 0.0

    def save(self) -> None:
        try:
            self.table.save(self.out)
        except OSError as exc:
            raise ProfileError(f"cannot write {self.out}: {exc.strerror or exc}; choose another --out") from None
        self.last = time.monotonic()

    def maybe_save(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.save()


@dataclass(frozen=True)
class ChunkTiming:
    """What timing one chunk of ops gives: every op's rounds (key text -> RoundRecords, at the
    machine's speed of the moment) and its memory fields; `record_chunk` turns it into entries."""

    records: dict[str, list[RoundRecord]]
    memory: dict[str, dict]

    def reference_times(self) -> list[float]:
        """The reference's local times around the chunk's rounds (the machine's speed as it went)."""
        return [r.reference_ms for rounds in self.records.values() for r in rounds]


def time_chunk(profiler: Profiler, build_config: BuildConfig, chunk, reference_runner: Runner,
               rounds: RoundsConfig, *, seed: int = 0, records=None, on_segment=None, progress=None,
               done: int = 0, out: Path | str = "the table") -> ChunkTiming:
    """Prepare a chunk's ops ((key, op) pairs), time them in interleaved rounds against the
    reference runner (continuing `records`, finished rounds of a resumed table), read their
    memory, release them. The one per-chunk step of a local profile and of a Ray actor's."""
    runners = _prepare_chunk(profiler, build_config, chunk, done, out)
    try:
        timed = time_rounds({k.text: runners[k.text].time_call for k, _ in chunk}, reference_runner.time_call,
                            rounds, seed=seed, records=records, on_segment=on_segment, progress=progress)
        memory = {k.text: runners[k.text].memory().fields() for k, _ in chunk}
    finally:
        for runner in runners.values():
            runner.close()
    return ChunkTiming({k.text: timed[k.text] for k, _ in chunk}, memory)


def pending_rounds(table: LatencyTable, chunk) -> dict[str, list[RoundRecord]]:
    """The rounds a resumed table already holds for a chunk's ops ((key, op) pairs), by key text."""
    return {k.text: [RoundRecord.from_dict(r) for r in table.pending.get(k.text, [])] for k, _ in chunk}


def record_chunk(table: LatencyTable, keys, timing: ChunkTiming) -> list[tuple[OpKey, Measurement]]:
    """Put a timed chunk's entries into the table, each round rescaled to the table's reference
    time (fixed here by the first chunk of a new table); drops their pending rounds."""
    if not table.reference.get("ms"):
        set_reference_time(table.reference, reference_median(timing.records),
                           sum(len(v) for v in timing.records.values()))
    r0 = float(table.reference["ms"])
    entries = []
    for key in keys:
        entry = Measurement(**summarise(timing.records[key.text], r0), **timing.memory[key.text], rounds_dropped=0)
        table.put(key, entry)
        table.pending.pop(key.text, None)
        entries.append((key, entry))
    return entries


def _prepare_chunk(profiler: Profiler, build_config: BuildConfig, chunk, done: int, out) -> dict[str, Runner]:
    """Runners of a chunk's ops (closed again if one fails to prepare)."""
    runners: dict[str, Runner] = {}
    try:
        for key, op in chunk:
            try:
                runners[key.text] = profiler.prepare(op_module(op, build_config), key.shape)
            except HwnasError as exc:
                raise type(exc)(f"{op.label}: {exc} ({done} finished entries are saved in {out})") from exc
            except Exception as exc:
                raise ProfileError(
                    f"preparing {op.label} on {profiler.name} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                    f"{done} finished entries are saved in {out}; rerun with --resume once fixed"
                ) from exc
    except BaseException:
        for runner in runners.values():
            runner.close()
        raise
    return runners
