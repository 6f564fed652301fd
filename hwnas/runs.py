"""Run directories of long jobs (search, train): refuse to overwrite, atomic checkpoints, JSONL logs,
RNG states, and the check that a resumed run has the settings it was started with."""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from .errors import HwnasError
from .jsonio import atomic_write_bytes, atomic_write_text


class RunError(HwnasError):
    """A run directory cannot be used: not empty without --resume, or resumed with other settings."""


def prepare_run_dir(path: str | os.PathLike, resume: bool, checkpoint_name: str) -> tuple[Path, bool]:
    """Create RUN_DIR or accept it for resuming. Returns (path, whether a checkpoint is there to resume).

    Without `resume` an existing non-empty directory is refused (nothing is overwritten); with it,
    a directory holding no checkpoint must be empty (then the run starts from scratch).
    """
    run_dir = Path(path)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file; give a directory")
    has_files = run_dir.is_dir() and any(run_dir.iterdir())
    has_checkpoint = (run_dir / checkpoint_name).is_file()
    if has_files and not resume:
        raise RunError(f"run directory {run_dir} is not empty; pass --resume to continue it or choose a new --out")
    if resume and has_files and not has_checkpoint:
        raise RunError(f"run directory {run_dir} holds no {checkpoint_name} to resume from; choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, has_checkpoint


def refuse_nonempty(path: str | os.PathLike, resume: bool) -> None:
    """The early form of prepare_run_dir's check, made before slow set-up (no directory is created)."""
    run_dir = Path(path)
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunError(f"run directory {run_dir} is not empty; pass --resume to continue it or choose a new --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file; give a directory")
    check_writable(run_dir)


def check_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse (one line, before any work) an output path whose folder (the path itself when it is
    one, else its nearest existing parent) cannot be written: probed by creating and removing a file
    there, which also catches read-only mounts and root on read-only file systems."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".hwnas-probe-", dir=folder)
    except OSError as exc:
        raise RunError(f"cannot write {flag} {path}: folder {folder} is not writable ({exc.strerror}); "
                       f"choose another {flag}") from None
    os.close(fd)
    os.unlink(probe)


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """torch.save into memory, then an atomic write: a crash never leaves a half checkpoint."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, expected_format: str, fix: str = "start a new run with another --out",
                    what: str = "checkpoint", error: type[HwnasError] = RunError) -> dict:
    """A torch file (tensors and plain types only) holding `format: expected_format`; one line
    naming the file, what it should be and `fix` when it is not one."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise error(f"{what} {path} is not a readable checkpoint ({type(exc).__name__}); {fix}") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise error(f"{path} is not an hwnas {what} (no format {expected_format!r}); {fix}")
    return payload


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping]) -> None:
    """Rewrite a JSONL log atomically from the records kept in the checkpoint (so they always agree)."""
    atomic_write_text(path, "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def open_run(path: str | os.PathLike, resume: bool, checkpoint_name: str, config: Mapping,
             load: Callable[[Path], dict], ignore: Iterable[str] = ()) -> tuple[Path, dict | None]:
    """The prologue every resumable job shares: create or accept RUN_DIR (see prepare_run_dir), and
    when it holds a checkpoint, load it with `load` and check that it was started with `config`
    (except `ignore`). Returns (run_dir, the loaded state or None for a fresh run)."""
    run_dir, has_checkpoint = prepare_run_dir(path, resume, checkpoint_name)
    if not has_checkpoint:
        return run_dir, None
    state = load(run_dir / checkpoint_name)
    check_same_config(state["config"], config, run_dir, ignore=ignore)
    return run_dir, state


def open_training_run(path: str | os.PathLike, resume: bool, checkpoint_name: str, checkpoint_format: str,
                      config: Mapping, modules: Mapping[str, object]) -> tuple[Path, dict | None, list[dict], int, float]:
    """open_run for a training job whose checkpoint is `checkpoint_format`, restoring `modules` and
    the RNG state where it holds one. Returns (run_dir, state or None, log, epochs done, wall
    seconds so far)."""
    run_dir, state = open_run(path, resume, checkpoint_name, config,
                              lambda checkpoint: load_checkpoint(checkpoint, checkpoint_format))
    if state is None:
        return run_dir, None, [], 0, 0.0
    return (run_dir, state, *restore_training(state, modules))


def restore_training(state: dict, modules: Mapping[str, object]) -> tuple[list[dict], int, float]:
    """Load each `modules[key].load_state_dict(state[key])` and the RNG state of a training
    checkpoint; returns (log, epochs done, wall seconds so far)."""
    for key, module in modules.items():
        module.load_state_dict(state[key])
    set_rng_state(state["rng"])
    return list(state["log"]), state["epoch"], state["wall_s"]


#: run settings (keys of a run's config) by the flag that sets them, the first checked first: a
#: resume that changes the strategy is told so, not that the strategy's own settings differ
CONFIG_FLAGS = {"strategy": "--strategy", "space": "--space", "evaluator": "--evaluator", "data": "--data",
                "lut": "--lut/--device (the latency table)", "task_head": "--task-head/--task-classes",
                "seed": "--seed", "resolution": "--resolution", "batch": "--batch", "objectives": "--objectives",
                "budgets": "the budgets", "budget_ms": "--latency-budget"}


def check_same_config(saved: Mapping, current: Mapping, run_dir: Path, ignore: Iterable[str] = ()) -> None:
    """A resumed run must use the settings it was started with (except `ignore`, e.g. epochs); the
    first difference, by flag where one sets it, is one line with both values."""
    skip = set(ignore)
    keys = sorted(set(saved) | set(current), key=lambda k: (list(CONFIG_FLAGS).index(k) if k in CONFIG_FLAGS
                                                            else len(CONFIG_FLAGS), k))
    for key in keys:
        if key in skip or saved.get(key) == current.get(key):
            continue
        what = CONFIG_FLAGS.get(key, key)
        raise RunError(f"{run_dir}: {what} was {_shown(saved.get(key))}, now {_shown(current.get(key))}; resume with "
                       "the same settings or choose a new --out")


def _shown(value) -> str:
    """A setting as a person reads it (an evaluator by its name, not its whole description)."""
    if isinstance(value, dict) and "evaluator" in value:
        return str(value["evaluator"])
    return "none" if value is None else str(value)
