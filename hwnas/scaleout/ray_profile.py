"""`hwnas profile --ray`: profile a space with one Ray actor per device, into one table per device.

An actor (`ProfileWorker`) holds a profiler bound to its device: a GPU (Ray gives it one and sets
CUDA_VISIBLE_DEVICES, so it is device 0 inside), or `threads` CPUs of a host, optionally only on
nodes that offer a custom resource (`--ray-resource NAME`, e.g. `ray start --resources
'{"pixel7": 1}'`: a host tag). Each actor times chunks of ops with the same step as a local
profile (`hwnas.profilers.session.time_chunk`: interleaved rounds against the table's reference
network) and returns the raw rounds.

The driver (this process) owns the tables. Actors are grouped by their device identity (the
fingerprint and options a table's identity compares, `LatencyTable.identity`); each group
fills one table, opened, resumed and checked like a local one (`open_table`), locked, and saved
atomically as each chunk comes back (in completion order). Every round is rescaled to the
table's reference time, fixed by the first chunk that returns for a new table: the reference
network is timed by every actor around its own rounds, so entries timed by actors on different
hosts of the same device kind, or at different moments on one loaded host, are expressed at one
speed and are comparable. Several CPU actors on one host time at the same moment and slow each
other (shared caches, memory bandwidth, clocks); the rescaling cancels what slows the reference
and the ops alike, not every difference, so a table to ship is best timed by one actor per host
(a host tag with one unit per host: `--ray-resource`).

An actor that dies (a crash, a lost node) is restarted by Ray (`max_restarts`); the chunk it
was timing is queued again for any live actor of its group, at most `max_failures` times. An
error of the profiler itself (an op that cannot be prepared) is not retried: it stops the run
as it would locally, with every finished entry saved.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.build import BuildConfig
from ..errors import HwnasError, ProfileError
from ..profilers.table import LatencyTable, OpKey, device_identity
from ..locks import hold_all
from ..profilers.interleaved import RoundsConfig
from ..profilers.session import (ChunkTiming, Checkpoint, ProfileSettings, check_writable, default_table_name,
                                 pending_rounds, record_chunk, table_and_todo, time_chunk)
from ..profilers.statistics import StatsConfig
from ..core.spaces import OpInstance, SearchSpace
from .ray_runtime import cluster_slots, fits, import_ray, raise_hwnas_cause

#: ops sent to an actor at a time: small, so that a dead actor loses little and the work spreads
OPS_PER_CHUNK = 8


def is_gpu_backend(backend: str) -> bool:
    """Backends bound to a CUDA device (they take a `device` index)."""
    from ..profilers import backend_options

    return "device" in backend_options(backend)


@dataclass(frozen=True)
class Placement:
    """What one profiling actor asks Ray for: CPUs (its threads), a GPU, and a host tag."""

    num_cpus: float
    num_gpus: float = 0
    resource: str | None = None

    @classmethod
    def for_backend(cls, backend: str, options: dict, resource: str | None = None) -> "Placement":
        return cls(num_cpus=float(options.get("threads") or 1), num_gpus=1.0 if is_gpu_backend(backend) else 0.0,
                   resource=resource)

    def actor_options(self) -> dict:
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resource:
            options["resources"] = {self.resource: 1}
        return options

    def fits(self, resources: dict) -> int:
        """How many such actors a node with these (total) resources holds."""
        return fits(resources, self.num_cpus, self.num_gpus, self.resource)

    def describe(self) -> str:
        parts = [f"{self.num_cpus:g} CPU"] + ([f"{self.num_gpus:g} GPU"] if self.num_gpus else [])
        return " + ".join(parts + ([f"1 {self.resource}"] if self.resource else []))


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of ops for an actor: the ops, the table's reference network and the timing settings."""

    build_config: BuildConfig
    ops: tuple[tuple[OpKey, OpInstance], ...]
    reference: dict
    batch: int
    rounds: RoundsConfig
    seed: int
    pending: dict  # key text -> RoundRecords already timed (a resumed table's unfinished ops)
    saved: int  # finished entries of the table when sent (for the error message of an op that fails)
    out: str


class ProfileWorker:
    """The state of a profiling actor: a profiler bound to its device, and the reference network
    prepared on it. A plain class; `profile_space_ray` makes it a Ray actor."""

    def __init__(self, backend: str, options: dict, stats: StatsConfig | None = None):
        from ..profilers import get_profiler

        self.profiler = get_profiler(backend, stats=stats, **options)
        self._reference: tuple[str, object] | None = None

    def describe(self) -> dict:
        """Backend, options, dtype and device fingerprint of this actor, and where it runs."""
        p = self.profiler
        return {"name": p.name, "options": p.options(), "dtype": p.dtype, "device": p.fingerprint(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def overhead_ms(self) -> float | None:
        return self.profiler.overhead_ms()

    def profile_chunk(self, job: ChunkJob) -> ChunkTiming:
        """Time the job's ops against the reference network (prepared once per actor)."""
        return time_chunk(self.profiler, job.build_config, job.ops, self._reference_runner(job.reference, job.batch),
                          job.rounds, seed=job.seed, records=job.pending, done=job.saved, out=job.out)

    def _reference_runner(self, reference: dict, batch: int):
        from ..core.reference import reference_model

        key = json.dumps([{k: reference.get(k) for k in ("space", "resolution", "num_classes", "choices")}, batch],
                         sort_keys=True)
        if self._reference is None or self._reference[0] != key:
            if self._reference is not None:
                self._reference[1].close()
            model, shape = reference_model(reference, batch)
            self._reference = (key, self.profiler.prepare(model, shape))
        return self._reference[1]


@dataclass(frozen=True)
class ActorDevice:
    """What actors report about their device; stands in for the profiler when a table is opened
    and named (`open_table`, `default_table_name`), so the driver needs no device of its own."""

    name: str
    option_values: dict
    dtype: str
    device: dict

    def options(self) -> dict:
        return self.option_values

    def fingerprint(self) -> dict:
        return self.device

    def identity(self) -> str:
        return json.dumps([self.name, self.option_values, self.dtype, device_identity(self.device)], sort_keys=True,
                          default=str)


@dataclass(frozen=True)
class DeviceReport:
    """What a Ray profile did for one device's table."""

    path: Path
    total: int
    measured: int
    skipped: int
    remeasured: int
    actors: int  # actors that timed at least one chunk into this table
    hosts: tuple[str, ...]
    reference_ms: float | None
    drift: float | None  # slowest / fastest local reference time seen by one actor, worst actor


@dataclass(frozen=True)
class RayProfileReport:
    tables: tuple[DeviceReport, ...]
    actors: int
    requeued: int  # chunks timed again because their actor died
    elapsed_s: float


@dataclass
class _Chunk:
    ops: list
    seed: int
    failures: int = 0


@dataclass(frozen=True, eq=False)
class _Actor:
    """One profiling actor: its position among all actors (what hosts and counts are keyed by) and
    its Ray handle."""

    index: int
    handle: object


@dataclass(frozen=True, eq=False)
class _Call:
    """A call in flight on an actor of a group: a chunk to time, or (chunk None) a probe of an actor
    whose last call failed, failing since `since`."""

    group: "_Group"
    actor: _Actor
    chunk: _Chunk | None = None
    since: float = 0.0


@dataclass(frozen=True, eq=False)
class _Retry:
    """A probe to send again at `at` (monotonic seconds): the actor is still restarting."""

    at: float
    call: _Call


@dataclass
class _Group:
    """The actors of one device kind and the table they fill."""

    device: ActorDevice
    actors: list[_Actor]
    hosts: dict = field(default_factory=dict)  # actor index -> host
    path: Path | None = None
    table: LatencyTable | None = None
    saver: Checkpoint | None = None
    queue: deque = field(default_factory=deque)
    idle: list[_Actor] = field(default_factory=list)
    total: int = 0
    skipped: int = 0
    measured: int = 0
    remeasured: int = 0
    contributed: set = field(default_factory=set)
    dead: set = field(default_factory=set)  # actor indices given up on
    reference_times: dict = field(default_factory=dict)  # actor index -> local reference times


def actor_count(ray, placement: Placement, requested: int | None) -> int:
    """`requested`, or as many actors as the cluster's live nodes hold; refuses more than that."""
    fitting = cluster_slots(ray, placement.num_cpus, placement.num_gpus, placement.resource)
    if requested is not None and requested < 1:
        raise ProfileError(f"--ray-actors must be >= 1, got {requested}")
    if fitting < 1 or (requested is not None and requested > fitting):
        want = requested if requested is not None else 1
        raise ProfileError(
            f"the Ray cluster holds {fitting} profiling actor(s) of {placement.describe()} each, {want} wanted; "
            "add nodes (`ray start --address HOST:6379"
            + (f" --resources '{{\"{placement.resource}\": 1}}'" if placement.resource else "")
            + "`), or lower --ray-actors or --threads")
    return requested if requested is not None else fitting


def profile_space_ray(
    space: SearchSpace,
    backend: str,
    options: dict,
    out: str | os.PathLike,
    settings: ProfileSettings = ProfileSettings(),
    *,
    stats: StatsConfig | None = None,
    actors: int | None = None,
    resource: str | None = None,
    worker: type = ProfileWorker,
    ops_per_chunk: int = OPS_PER_CHUNK,
    max_restarts: int = 3,
    max_failures: int = 3,
    start_timeout_s: float = 300.0,
    on_chunk: Callable[[object, list[OpKey]], None] | None = None,
) -> RayProfileReport:
    """Measure every unique op of `space` missing from the table(s) at `out` on the actors of the
    connected Ray cluster; see the module doc. `out` is a table file, or a folder (an existing one,
    or a path ending in '/') that gets one table per device. `on_chunk(actor, keys)` is called as
    each chunk's entries are saved."""
    batch, resume, rounds, seed, progress = (settings.batch, settings.resume, settings.rounds, settings.seed,
                                             settings.progress)
    if is_gpu_backend(backend) and options.get("device") not in (None, 0):
        raise ProfileError("--device picks a GPU of this machine; with --ray each actor gets its own GPU from Ray "
                           "(device 0 inside it): drop --device, and tag hosts with --ray-resource to choose them")
    out_file = Path(out)
    if not resume and out_file.is_file():  # refused as locally, before any actor starts
        raise ProfileError(f"{out_file} exists; pass --resume to continue it or choose another --out")
    ray = import_ray()
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError  # Ray is imported by now

    placement = Placement.for_backend(backend, options, resource)
    count = actor_count(ray, placement, actors)
    started = time.perf_counter()
    remote = ray.remote(worker).options(max_restarts=max_restarts, max_task_retries=0, **placement.actor_options())
    handles = [remote.remote(backend, options, stats) for _ in range(count)]
    groups: list[_Group] = []
    try:
        try:
            described = ray.get([h.describe.remote() for h in handles], timeout=start_timeout_s)
        except GetTimeoutError:
            raise ProfileError(f"{count} profiling actors of {placement.describe()} did not all start within "
                               f"{start_timeout_s:.0f} s; check `ray status`, or lower --ray-actors") from None
        except (RayActorError, RayTaskError) as exc:
            raise ProfileError(f"a profiling actor could not start: {_cause(exc)}") from None
        groups = _groups(handles, described)
        paths = _table_paths(groups, Path(out), str(out).endswith(("/", "\\")))
        with hold_all(paths, "latency table"):
            for group, path in zip(groups, paths):
                _open(group, path, space, batch, resume, rounds, seed, ops_per_chunk)
            requeued = _run(ray, groups, space, batch, rounds, progress, max_restarts, max_failures, start_timeout_s,
                            on_chunk)
    finally:
        for group in groups:
            if group.saver is not None and group.path.exists():
                group.saver.save()
        for handle in handles:
            ray.kill(handle)
    reports = []
    for g in groups:
        drifts = [max(v) / min(v) for v in g.reference_times.values() if v]
        reports.append(DeviceReport(g.path, g.total, g.measured, g.skipped, g.remeasured, len(g.contributed),
                                    tuple(sorted({g.hosts[i] for i in g.contributed})),
                                    (g.table.reference or {}).get("ms"), max(drifts) if drifts else None))
    return RayProfileReport(tuple(reports), count, requeued, time.perf_counter() - started)


def _cause(exc: Exception) -> str:
    """The one-line reason of a Ray error: the profiler's own message where there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception):
        return str(cause) if isinstance(cause, HwnasError) else f"{type(cause).__name__}: {str(cause)[:200]}"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    hwnas_lines = [line for line in lines if "Error: " in line]
    return (hwnas_lines or lines or [type(exc).__name__])[-1].strip()[:300]


def _groups(handles, described: list[dict]) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for index, (handle, info) in enumerate(zip(handles, described)):
        device = ActorDevice(info["name"], info["options"], info["dtype"], info["device"])
        group = groups.setdefault(device.identity(), _Group(device, []))
        group.actors.append(_Actor(index, handle))
        group.hosts[index] = info["host"]
    return list(groups.values())


def _table_paths(groups: list[_Group], out: Path, folder: bool) -> list[Path]:
    """One table per device group: `out` itself for one group, else `out/<default name>`."""
    if out.is_dir() or folder:
        paths = [out / default_table_name(g.device, g.device.fingerprint()) for g in groups]
        for i, j in ((i, j) for j in range(len(paths)) for i in range(j) if paths[i] == paths[j]):
            first, second = groups[i].device, groups[j].device
            mine, theirs = device_identity(first.device), device_identity(second.device)
            differ = [f"device {k}" for k in sorted({*mine, *theirs}) if mine.get(k) != theirs.get(k)]
            differ = differ or [n for n, a, b in [("options", first.options(), second.options())] if a != b]
            raise ProfileError(f"two device kinds of the cluster would share the table name {paths[i].name} "
                               f"(they differ in {', '.join(differ) or 'their fingerprint'}); "
                               "profile them one at a time with --ray-resource, each into its own --out file")
    else:
        if len(groups) > 1:
            kinds = ", ".join(f"{len(g.actors)} on {default_table_name(g.device, g.device.fingerprint())[:-5]}"
                              for g in groups)
            raise ProfileError(f"the Ray actors run on {len(groups)} device kinds ({kinds}), one table each; "
                               "give --out a folder (ending in '/') or choose one kind with --ray-resource")
        paths = [out]
    for path in paths:
        check_writable(path)
    return paths


def _open(group: _Group, path: Path, space: SearchSpace, batch: int, resume: bool, rounds: RoundsConfig,
          seed: int, ops_per_chunk: int) -> None:
    """Open or resume the group's table (the local rules), save its metadata, and queue its missing ops."""
    table, keys, todo = table_and_todo(group.device, path, space, batch, resume, rounds, seed)
    size = max(1, min(ops_per_chunk, rounds.chunk_size))
    group.queue.extend(_Chunk(todo[i:i + size], seed + i) for i in range(0, len(todo), size))
    group.path, group.table, group.total, group.skipped = path, table, len(keys), len(keys) - len(todo)
    group.saver = Checkpoint(table, path, 1.0)
    group.idle = list(group.actors)
    group.saver.save()  # metadata first: the file exists and is valid from the start


def _run(ray, groups: list[_Group], space: SearchSpace, batch: int, rounds: RoundsConfig, progress: bool,
         max_restarts: int, max_failures: int, recover_timeout_s: float, on_chunk) -> int:
    """Keep every actor busy with its group's chunks; record results in completion order. An actor
    whose call failed gets no chunk until a probe (`describe`) shows it back, on the same device."""
    from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
    from tqdm import tqdm

    for group in groups:
        if group.queue and group.table.overhead_ms is None:
            try:
                group.table.overhead_ms = ray.get(group.actors[0].handle.overhead_ms.remote())
            except (RayActorError, RayTaskError) as exc:
                raise ProfileError(f"timing the backend's call overhead on a Ray actor failed: {_cause(exc)}") from None
    total = sum(g.total for g in groups) * rounds.rounds
    done = sum(g.skipped for g in groups) * rounds.rounds
    bar = tqdm(total=total, initial=done, unit="op-round", file=sys.stderr, dynamic_ncols=True,
               desc=f"{groups[0].device.name} {space.name}@{space.resolution} on Ray",
               disable=not progress or done == total)
    calls: dict = {}  # Ray object ref -> _Call: chunks being timed and probes of failed actors
    retries: list[_Retry] = []
    requeued = 0

    def drop(group: _Group, actor: _Actor) -> None:
        group.dead.add(actor.index)
        ray.kill(actor.handle)
        if group.queue and len(group.dead) == len(group.actors):
            raise ProfileError(f"every Ray actor of {group.path.name} died (Ray restarts each at most "
                               f"{max_restarts} times); {len(group.table)} finished entries are saved in "
                               f"{group.path}; check the nodes (`ray status`), then rerun with --resume")

    def probe(group: _Group, actor: _Actor, since: float) -> None:
        calls[actor.handle.describe.remote()] = _Call(group, actor, None, since)

    try:
        while True:
            for group in groups:
                while group.idle and group.queue:
                    actor, chunk = group.idle.pop(0), group.queue.popleft()
                    job = ChunkJob(space.build_config, tuple(chunk.ops), group.table.reference, batch, rounds,
                                   chunk.seed, pending_rounds(group.table, chunk.ops), len(group.table), str(group.path))
                    calls[actor.handle.profile_chunk.remote(job)] = _Call(group, actor, chunk)
            now = time.monotonic()
            for retry in [r for r in retries if r.at <= now]:
                retries.remove(retry)
                probe(retry.call.group, retry.call.actor, retry.call.since)
            if not calls and not retries:
                break
            timeout = max(0.0, min(r.at for r in retries) - now) if retries else None
            if calls:
                ready, _ = ray.wait(list(calls), num_returns=1, timeout=timeout)
            else:  # only actors that are restarting: probe them again shortly
                time.sleep(timeout)
                ready = []
            if not ready:
                continue
            [ref] = ready
            call = calls.pop(ref)
            group, actor = call.group, call.actor
            if call.chunk is None:  # a probe
                try:
                    info = ray.get(ref)
                except ActorDiedError:  # restarts used up, or its node is gone for good
                    drop(group, actor)
                    continue
                except RayActorError:  # still restarting
                    if time.monotonic() - call.since > recover_timeout_s:
                        drop(group, actor)
                    else:
                        retries.append(_Retry(time.monotonic() + 0.5, call))
                    continue
                same = ActorDevice(info["name"], info["options"], info["dtype"], info["device"]).identity()
                if same == group.device.identity():
                    group.idle.append(actor)
                else:  # restarted on another kind of node: its numbers belong to another table
                    drop(group, actor)
                continue
            chunk = call.chunk
            try:
                timing = ray.get(ref)
            except RayActorError:
                chunk.failures += 1
                if chunk.failures > max_failures:
                    keys = ", ".join(k.text for k, _ in chunk.ops)
                    raise ProfileError(f"the Ray actors timing {keys} died {chunk.failures} times; "
                                       f"{len(group.table)} finished entries are saved in {group.path}; "
                                       "check the nodes' logs (`ray logs`), then rerun with --resume") from None
                group.queue.appendleft(chunk)  # for any live actor of the group
                requeued += 1
                probe(group, actor, time.monotonic())
                continue
            except RayTaskError as exc:
                raise_hwnas_cause(exc)
                raise ProfileError(f"profiling on a Ray actor failed ({_cause(exc)}); {len(group.table)} finished "
                                   f"entries are saved in {group.path}; rerun with --resume once fixed") from None
            keys = [k for k, _ in chunk.ops]
            for _key, entry in record_chunk(group.table, keys, timing):
                group.measured += 1
                group.remeasured += bool(entry.remeasured)
            group.saver.save()
            group.contributed.add(actor.index)
            group.reference_times.setdefault(actor.index, []).extend(timing.reference_times())
            group.idle.append(actor)
            bar.update(len(keys) * rounds.rounds)
            if on_chunk:
                on_chunk(actor.handle, keys)
    finally:
        bar.close()
    return requeued
