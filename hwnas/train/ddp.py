"""torchrun / DDP for supernet training: `torchrun --nproc-per-node N -m hwnas search ...`.

What is distributed: the supernet training of `--strategy fbnet` (weight and architecture steps)
and of `--evaluator shared` (the SPOS supernet a trial strategy scores with). Everything after
it (fbnet's derivation and finalists, the trial loop, verification, every file written) runs in
process 0 alone; the others leave with exit 0 once the supernet is trained.

Semantics: `--batch-size` stays the global batch. Every process builds the same loader (same
seed, same global RNG state, so the same images and augmentation), takes its contiguous
1/N slice of each global batch (`shard`), and the model is wrapped in DistributedDataParallel,
which averages the gradients: with equal slices that is the single-process step on the whole
batch except for batch norm, whose statistics are each slice's (SyncBatchNorm runs on GPUs only;
hwnas trains on the CPU). The SPOS path and FBNet's Gumbel noise come from RNGs seeded alike in
every process, so all processes take the same path and the same architecture sample each step.
Logged losses and top-1 are averaged over the processes (`all_reduce_mean`): process 0's log is
the global figure.

Checkpoints: process 0 writes them and, on `--resume`, loads the checkpoint and broadcasts it
(`on_main`), so the other processes need no access to --out (multi-node runs work without a
shared file system). Backend: gloo for CPU training (all of hwnas's training today); `session`
picks NCCL and the LOCAL_RANK GPU when asked for a CUDA device.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import HwnasError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class SecondaryDone(Exception):
    """Raised in a process other than 0 when its share (the supernet training) is done;
    `session` ends it quietly, so the process exits 0 without writing anything."""


def from_env(environ: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    env = os.environ if environ is None else environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))
    except ValueError:
        raise HwnasError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start the processes with "
                         "torchrun") from None
    if size > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise HwnasError(f"WORLD_SIZE={size} but MASTER_ADDR/MASTER_PORT are unset; start the processes with "
                         "torchrun --nproc-per-node N -m hwnas ...")
    if size < 1 or not 0 <= rank < size:
        raise HwnasError(f"RANK={rank} is not within WORLD_SIZE={size}; start the processes with torchrun")
    return World(rank, size, local_rank)


def world() -> World:
    """The joined process group (see `session`), or the single-process world."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                 dist.get_backend())


def is_main() -> bool:
    return world().is_main


@contextlib.contextmanager
def session(device: str = "cpu", environ: Mapping[str, str] | None = None) -> Iterator[World]:
    """Join torchrun's process group for the block and leave it after (a no-op without torchrun
    or when a group is already up). gloo for `device` cpu; NCCL for cuda, on GPU LOCAL_RANK.
    A `SecondaryDone` raised in the block ends it quietly."""
    env = from_env(environ)
    if not env.distributed or dist.is_initialized():
        try:
            yield world()
        except SecondaryDone:
            pass
        return
    backend = "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise HwnasError("a CUDA device was asked for but none is visible; train on the CPU (gloo)")
        torch.cuda.set_device(env.local_rank)
        backend = "nccl"
    dist.init_process_group(backend, rank=env.rank, world_size=env.size)
    try:
        yield world()
    except SecondaryDone:
        pass
    finally:
        dist.destroy_process_group()


def leave_unless_main() -> None:
    """In a process other than 0: its work is done; `session` ends it with exit 0."""
    if not is_main():
        raise SecondaryDone


def check_batch(batch_size: int, flag: str = "--batch-size") -> None:
    """A global batch must split into equal slices of at least 2 (batch norm): the gradient
    average then equals the whole batch's."""
    size = world().size
    if size > 1 and (batch_size % size or batch_size // size < 2):
        raise HwnasError(f"{flag} {batch_size} does not split into {size} equal slices of at least 2 images "
                         f"(one per torchrun process); give a multiple of {size}, at least {2 * size}")


def shard(batch):
    """This process's contiguous slice of a global batch (a tensor, or a tuple/list of them)."""
    w = world()
    if not w.distributed:
        return batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b) for b in batch)
    return batch.tensor_split(w.size)[w.rank]


def shard_batches(loader: Iterable) -> Iterator:
    """Every global batch of `loader`, sliced for this process."""
    for batch in loader:
        yield shard(batch)


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Process 0's `obj` in every process (pickled; tensors included)."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(*values: float) -> tuple[float, ...]:
    """The mean of each value over the processes (the global figure of per-slice means)."""
    w = world()
    if not w.distributed:
        return tuple(float(v) for v in values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return tuple((t / w.size).tolist())


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` run in process 0 only (opening a run directory, taking its lock, loading a
    checkpoint), its result broadcast to all; an HwnasError it raises is raised in every process
    (so none waits for a partner that gave up)."""
    w = world()
    if not w.distributed:
        return fn()
    outcome, original = None, None
    if w.is_main:
        try:
            outcome = ("ok", fn())
        except HwnasError as exc:
            outcome, original = ("error", exc), exc
        except BaseException as exc:
            broadcast_object(("error", HwnasError(f"process 0 failed: {type(exc).__name__}: {exc}")))
            raise
    kind, value = broadcast_object(outcome)
    if kind == "error":
        raise original or value
    return value


class _Method(nn.Module):
    """Routes forward to another method of the module (DDP syncs only what runs in forward)."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.method)(*args, **kwargs)


def distributed(module: nn.Module, method: str = "forward") -> Callable:
    """`module.<method>` wrapped in DistributedDataParallel (gradients averaged over the
    processes in backward); the plain method in a single process. Unused parameters are allowed:
    a single-path step or a weight-only step leaves candidates or the architecture unused."""
    w = world()
    if not w.distributed:
        return getattr(module, method)
    device = [w.local_rank] if w.backend == "nccl" else None
    target = module if method == "forward" else _Method(module, method)
    return nn.parallel.DistributedDataParallel(target, device_ids=device, find_unused_parameters=True)
