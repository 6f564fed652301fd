"""Trial records and the JSONL trial history of a search run (one line per finished trial, appended
and fsynced as it finishes, so that a run killed with -9 loses at most the trials in flight)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from ..core.arch import Arch, arch_from_dict
from ..errors import HwnasError
from ..runs import RunError

class TrialState(str, Enum):
    """What became of a proposal. A `str` enum: it is its value in JSON and compares equal to it."""

    PENDING = "pending"  # proposed and within the budgets, not evaluated yet (never written to the history)
    COMPLETE = "complete"  # evaluated
    FAILED = "failed"  # raised while evaluated, or recorded without a finite top-1
    INFEASIBLE = "infeasible"  # over a budget and not evaluated (reject mode)

    def __str__(self) -> str:
        return self.value


#: the states a history holds (a pending trial is finished before it is written)
FINISHED = (TrialState.COMPLETE, TrialState.FAILED, TrialState.INFEASIBLE)
HISTORY = "trials.jsonl"


@dataclass(frozen=True)
class Trial:
    """One proposal of a strategy and what became of it.

    `metrics` are the evaluator's figures (`top1`, %); `objective` is the scalar strategies
    maximise (top-1, or top-1 penalised for budget overshoot in penalise mode); `violations`
    maps each budget to its relative overshoot (> 0: over the budget)."""

    number: int
    arch: Arch
    state: TrialState
    predicted_ms: float
    params: int
    peak_activation_bytes: int
    seed: int
    metrics: dict = field(default_factory=dict)
    objective: float | None = None
    violations: dict = field(default_factory=dict)
    wall_s: float = 0.0
    elapsed_s: float = 0.0  # run time (all sessions) when the trial finished
    note: str = ""
    lineage: dict = field(default_factory=dict)  # a Lamarckian strategy's Lineage (parent, morphisms, weights)

    def __post_init__(self):
        object.__setattr__(self, "state", TrialState(self.state))  # a state given by its value is the enum

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations.values())

    @property
    def top1(self) -> float | None:
        return self.metrics.get("top1")

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["state"] = self.state.value  # plain JSON types: checkpoints load with weights_only
        doc["arch"] = self.arch.to_dict()
        doc["hash"] = self.arch.hash
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "Trial":
        """A trial read back; one recorded complete without a finite top-1 counts as failed. The
        `measured_ms` of older histories (a slot nothing filled) is dropped."""
        fields = {k: v for k, v in doc.items() if k not in ("hash", "measured_ms")}
        fields["arch"] = arch_from_dict(doc["arch"], "trial history")
        fields["state"] = TrialState(fields.get("state"))
        if fields["state"] not in FINISHED:
            raise ValueError(f"state {fields['state'].value!r} is not one a history holds")
        top1 = (fields.get("metrics") or {}).get("top1")
        if fields.get("state") == "complete" and not (isinstance(top1, (int, float)) and not isinstance(top1, bool)
                                                     and math.isfinite(top1)):
            fields.update(state=TrialState.FAILED, objective=None, note=f"recorded complete without a finite top-1 ({top1!r})")
        return cls(**fields)


def trial_seed(run_seed: int, arch: Arch) -> int:
    """The evaluation seed of an architecture in a run: a function of the run's seed and the
    architecture only, so a score depends neither on the order of trials nor on a global RNG."""
    digest = hashlib.sha256(f"{run_seed}:{arch.hash}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def append_trial(path: Path, trial: Trial) -> None:
    """Append one line and fsync it: the history is the search's checkpoint."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(trial.to_dict(), sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_history(path: Path) -> list[Trial]:
    """The trials of a history by number (parallel evaluations append them as they finish). A torn
    last line (a kill during the write) is dropped with a warning on stderr; any other line that
    is not a trial is an error naming the file and the line."""
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RunError(f"{path} is not a UTF-8 trial history; restore it or start a new --out") from None
    trials = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise TypeError(f"a JSON {type(doc).__name__}, not an object")
            trials.append(Trial.from_dict(doc))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                print(f"hwnas: warning: {path} line {i + 1} is torn (the run was killed while writing it); "
                      "it is dropped and its trial runs again", file=sys.stderr)
                break
            raise RunError(f"{path} line {i + 1} is not JSON ({exc.msg}); restore the file or start a new --out") \
                from None
        except (TypeError, KeyError, ValueError, HwnasError) as exc:
            raise RunError(f"{path} line {i + 1} is not a trial record ({exc}); restore the file or start a new "
                           "--out") from None
    return sorted(trials, key=lambda t: t.number)


def repair_history(path: Path, trials: list[Trial]) -> None:
    """Rewrite the history without a torn last line, so that appends start on a fresh line."""
    from ..jsonio import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(t.to_dict(), sort_keys=True) + "\n" for t in trials))
