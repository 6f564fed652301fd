"""`hwnas search` as data: the options every strategy and evaluator declares (registry.py), the
trial loop's and Ray's records, the rule that refuses a flag the chosen strategy does not use
(derived from those declarations), and `SearchConfig`, the checked record of one search that
`run.run` carries out.

The rule: a declared flag is accepted when the chosen strategy's `records` declare it or, for a
strategy that uses an evaluator, the trial loop's records (TrialOptions, RayOptions) or the
chosen evaluator's record do. Any other declared flag the user set is an error naming who uses it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Iterable

from ..errors import HwnasError
from ..options import Flag, Options, add_flags, option
from ..train import ddp
from .ray_evaluator import RayOptions
from .devices import parse_devices, split_named
from .loop import LoopConfig
from .objectives import BUDGET_MODES, parse_memory_budget, parse_objectives, parse_params_budget
from .registry import EVALUATORS, STRATEGIES, evaluator_kind, get_strategy


@dataclass(frozen=True)
class TrialOptions(Options):
    """The trial loop of the strategies that use an evaluator: how many trials, scored how, under
    which other budgets. `penalty` None: 1.0 (given only with --budget-mode penalise); `batch` None:
    the resumed run's, else the Ray cluster's parallel trials with --ray, else 1."""

    title = "trial strategies"
    trials: int = option(20, "--trials", "evaluated candidates (default 20; those rejected over a budget do not "
                                         "count); a resume may raise it", type=int)
    time_limit: float | None = option(None, "--time-limit", "seconds of run time after which no trial starts",
                                      type=float, metavar="S")
    evaluator: str = option(
        "scratch", "--evaluator", choices=tuple(EVALUATORS), help=(
            "scratch: train each candidate --epochs (default); shared: score it with the weights of a SPOS "
            "supernet trained once for --epochs (see --supernet); nb201 (space nb201): look its accuracy up "
            "in NAS-Bench-201, no training, no --data (one query is one trial)"))
    objectives: str = option("acc", "--objectives", "acc (default), acc,latency or acc,latency,memory: several "
                                                    "write the Pareto front (pareto.json, pareto.png); the result is "
                                                    "its most accurate member within the budgets")
    memory_budget: str | None = option(None, "--memory-budget", "peak activation memory, e.g. 2MB, 512KiB "
                                                                "(predicted from the LUT)")
    params_budget: str | None = option(None, "--params-budget", "parameters, e.g. 1.5M, 300k")
    budget_mode: str = option(
        "reject", "--budget-mode", choices=BUDGET_MODES, help=(
            "reject (default): a candidate over a budget is not evaluated; penalise: it is, and its "
            "objective is scaled by (value/budget)^-penalty (MnasNet)"))
    penalty: float | None = option(None, "--penalty", "exponent of the penalise mode (default 1.0)", type=float)
    batch: int | None = option(
        None, "--batch", type=int, metavar="N", help=(
            "proposals asked before any is told, evaluated in parallel (default 1; with --ray the number of "
            "trials the cluster runs at once; a resume keeps the run's). Part of the run's identity: the "
            "same seed and batch give the same search wherever it runs"))

    def __post_init__(self):
        if self.penalty is not None and self.budget_mode != "penalise":
            raise HwnasError("--penalty is used by --budget-mode penalise only; add it or drop --penalty")
        _ = self.memory_bytes, self.params_count, self.objective_names  # each says what is wrong with its flag
        LoopConfig(trials=self.trials, time_limit_s=self.time_limit, batch=1 if self.batch is None else self.batch)

    @property
    def memory_bytes(self) -> int | None:
        return parse_memory_budget(self.memory_budget) if self.memory_budget is not None else None

    @property
    def params_count(self) -> int | None:
        return parse_params_budget(self.params_budget) if self.params_budget is not None else None

    @property
    def objective_names(self) -> tuple[str, ...]:
        return parse_objectives(self.objectives)


#: the records every strategy that uses an evaluator accepts, beside its own and its evaluator's
TRIAL_RECORDS: tuple[type[Options], ...] = (TrialOptions, RayOptions)
RAY_FLAG = RayOptions.flags()[0]


def strategy_records(cls) -> tuple[type[Options], ...]:
    """The records whose flags `cls` accepts whatever the evaluator: its own, and the trial loop's."""
    return tuple(cls.records) + (TRIAL_RECORDS if cls.uses_evaluator else ())


def accepted_records(cls, evaluator: str | None) -> tuple[type[Options], ...]:
    """The records whose flags `cls` accepts with `evaluator` (ignored by a strategy without one)."""
    return strategy_records(cls) + ((evaluator_kind(evaluator).options,) if cls.uses_evaluator else ())


def declared_records() -> tuple[type[Options], ...]:
    """Every record of the registries, each once: the trial loop's, the evaluators', the strategies'."""
    records = [*TRIAL_RECORDS, *(kind.options for kind in EVALUATORS.values())]
    records += [r for _, cls in sorted(STRATEGIES.items()) for r in cls.records]
    return tuple(dict.fromkeys(records))


def declared_flags(records: Iterable[type[Options]] | None = None) -> dict[str, Flag]:
    """dest -> flag of every declared flag (the first declaration of a flag several records share)."""
    flags: dict[str, Flag] = {}
    for record in declared_records() if records is None else records:
        for flag in record.flags():
            flags.setdefault(flag.dest, flag)
    return flags


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    """Add every declared flag to `hwnas search`'s parser, grouped by record."""
    trial = ", ".join(name for name, cls in STRATEGIES.items() if cls.uses_evaluator)
    add_flags(parser, declared_records(), titles={TrialOptions.title: f"trial strategies ({trial})"})


def _dests(records) -> set[str]:
    return {dest for record in records for dest in record.dests()}


def refuse_unused(args: argparse.Namespace) -> None:
    """A declared flag the chosen strategy (or its evaluator) does not declare is an error, not
    silently dropped; the message names the strategies (else the evaluators) that use it."""
    cls = get_strategy(args.strategy)
    evaluator = TrialOptions.values(args)["evaluator"] if cls.uses_evaluator else None
    accepted = _dests(accepted_records(cls, evaluator))
    flags = declared_flags()
    for dest in sorted(set(vars(args)) & set(flags) - accepted):
        if dest == RAY_FLAG.dest:
            raise HwnasError(f"--ray evaluates trials of the sampler strategies (random, evolution, tpe, nsga2, mnas); "
                             f"--strategy {cls.name} trains one supernet: run it under torchrun --nproc-per-node N "
                             "instead (README 'Scale-out')")
        users = sorted(name for name, c in STRATEGIES.items() if dest in _dests(strategy_records(c)))
        where = f"strategies {', '.join(users)}" if users else "--evaluator " + " / ".join(
            name for name, kind in EVALUATORS.items() if dest in kind.options.dests())
        raise HwnasError(f"{flags[dest].flag} is not used by --strategy {cls.name}"
                         + (f" with --evaluator {evaluator}" if cls.uses_evaluator else "")
                         + f" (it is for {where}); drop it")


def refuse_torchrun(cls, evaluator: str | None) -> None:
    """Under torchrun (WORLD_SIZE > 1) only supernet training is distributed: --strategy fbnet's,
    or the SPOS supernet of --evaluator shared. Any other search is refused, not run N times."""
    size = ddp.from_env().size
    if size > 1 and cls.name != "fbnet" and not (cls.uses_evaluator and evaluator == "shared"):
        what = f"--strategy {cls.name}" + (f" with --evaluator {evaluator}" if cls.uses_evaluator else "")
        raise HwnasError(f"{what} trains no supernet that torchrun's {size} processes could share (only --strategy "
                         "fbnet and --evaluator shared do); run it as one process (--ray evaluates trials in parallel)")


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """The Ray record of --ray and --ray-*; those flags without --ray are an error. None without --ray."""
    given = RayOptions.given(args)
    if RAY_FLAG not in given:
        if given:
            raise HwnasError(f"{given[0].flag} applies to Ray tasks only; add --ray [ADDRESS] or drop it")
        return None
    return RayOptions.from_args(args)


@dataclass(frozen=True)
class SearchConfig:
    """One search, as asked and checked: what to search and against which latency, the training
    data and run directory, the strategy's options records and, for a strategy that uses an
    evaluator, the trial loop's, the evaluator's and (with --ray) Ray's. Built by `from_args`
    (which refuses what `hwnas search` refuses before any work); run by `run.run`."""

    strategy: str
    space: str
    out: str
    luts: tuple[str, ...] = ()  # --lut [NAME=]TABLE, in order (several: one per device)
    devices: tuple[str, ...] = ()  # --device NAME (HW-NAS-Bench), in order
    resolution: int | None = None
    latency_budgets: tuple[str, ...] = ()  # --latency-budget [NAME=]BUDGET
    task_head: str | None = None
    task_classes: int = 2
    verify: bool = True
    data: str | None = None
    data_root: str | None = None
    train_resolution: int = 32
    batch_size: int = 64
    epochs: int = 10
    max_batches: int | None = None
    seed: int = 0
    resume: bool = False
    progress: bool = True
    strategy_options: tuple[Options, ...] = ()
    trial: TrialOptions | None = None
    evaluator: Options | None = None
    ray: RayOptions | None = None

    @property
    def device(self) -> str | None:
        """The one HW-NAS-Bench device of a single-device search by --device (else None)."""
        return self.devices[0] if len(self.devices) == 1 else None

    @property
    def latency_sources(self) -> tuple[str, ...]:
        """The devices as `[NAME=]SOURCE` flags: --lut's, or --device's named after themselves."""
        return self.luts or tuple(f"{d}={d}" for d in self.devices)

    @property
    def lut(self) -> str | None:
        """The one table of a single-device search (None with --device or several devices)."""
        return split_named(self.luts[0]).value if len(self.luts) == 1 else None

    @property
    def strategy_cls(self):
        return get_strategy(self.strategy)

    @property
    def evaluator_name(self) -> str | None:
        return self.trial.evaluator if self.trial is not None else None

    @property
    def tabular(self) -> bool:
        """The evaluator looks candidates up in a benchmark (no data; the benchmark fixes the space)."""
        return self.evaluator_name is not None and evaluator_kind(self.evaluator_name).tabular

    def make_strategy(self):
        return self.strategy_cls(*self.strategy_options)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SearchConfig":
        """The search of `hwnas search`'s parsed flags; refuses unused flags and bad values first."""
        refuse_unused(args)
        strategy = get_strategy(args.strategy)
        refuse_torchrun(strategy, TrialOptions.values(args)["evaluator"] if strategy.uses_evaluator else None)
        if args.task_classes is not None and not args.task_head:
            raise HwnasError("--task-classes is used with --task-head only; add --task-head HEAD or drop it")
        if args.task_head and args.device:
            raise HwnasError("--task-head measures a head on this machine with the LUT's backend; --device's latency is "
                             "HW-NAS-Bench's whole classification network: drop one")
        luts, budgets, devices = tuple(args.lut or ()), tuple(args.latency_budget or ()), tuple(args.device or ())
        parse_devices(luts or tuple(f"{d}={d}" for d in devices), budgets)  # says what is wrong before any work
        if args.task_head and len(luts) > 1:
            raise HwnasError("--task-head is measured on one table's backend; search one device (one --lut) with it")
        trial = TrialOptions.from_args(args) if strategy.uses_evaluator else None
        ray = ray_options(args) if trial is not None else None
        evaluator = None
        if trial is not None:
            evaluator = evaluator_kind(trial.evaluator).options.from_args(args)
            if getattr(strategy, "lamarckian", False) and not evaluator_kind(trial.evaluator).cls.inherits:
                raise HwnasError(f"--strategy {strategy.name} trains each child from its parent's weights, which "
                                 f"--evaluator {trial.evaluator} cannot: use --evaluator scratch")
        return cls(strategy=strategy.name, space=args.space, out=args.out, luts=luts, devices=devices,
                   resolution=args.resolution, latency_budgets=budgets, task_head=args.task_head,
                   task_classes=2 if args.task_classes is None else args.task_classes, verify=not args.no_verify,
                   data=args.data, data_root=args.data_root, train_resolution=args.train_resolution,
                   batch_size=args.batch_size, epochs=args.epochs, max_batches=args.max_batches, seed=args.seed,
                   resume=args.resume, progress=not args.no_progress,
                   strategy_options=tuple(record.from_args(args) for record in strategy.records),
                   trial=trial, evaluator=evaluator, ray=ray)
