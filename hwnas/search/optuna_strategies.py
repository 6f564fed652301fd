"""The `tpe` and `nsga2` strategies: Optuna 5's samplers driven by ask/tell.

One categorical parameter per decision of the space. The study lives in
`RUN_DIR/optuna.journal` (`JournalStorage(JournalFileBackend(...))`): on resume the loop replays
the history and each ask returns the journal's trial of that number instead of sampling anew;
a trial the journal still holds as running (the process was killed while it was evaluated) is
evaluated again with the same parameters (one killed before it had them is failed and skipped).
Budgets are `trial.set_constraint` values (relative overshoot, <= 0 feasible), which both
samplers honour. The sampler is re-seeded before each ask
from (seed, trial number): a proposal depends on the finished trials only, not on how many
processes the run took.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core.arch import Arch
from ..errors import HwnasError
from ..options import Options, option
from .base import TrialStrategy
from .evolution import POPULATION_HELP
from .objectives import OBJECTIVES

JOURNAL = "optuna.journal"


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is in requirements.txt
        raise HwnasError("the tpe and nsga2 strategies need optuna: pip install optuna==5.0.0") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class OptunaStrategy(TrialStrategy):
    """Base of the Optuna strategies: subclasses say which sampler to build for a seed."""

    def make_sampler(self, optuna, seed: int):
        raise NotImplementedError

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        optuna = self.optuna = _optuna()
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        # this run is the journal's only user: a lock left by a process killed while writing is stale
        (run_dir / (JOURNAL + ".lock")).unlink(missing_ok=True)
        drop_torn_line(run_dir / JOURNAL)
        storage = JournalStorage(JournalFileBackend(str(run_dir / JOURNAL)))
        directions = [OBJECTIVES[name][1] for name in objectives]
        self.study = optuna.create_study(study_name="hwnas", storage=storage, directions=directions,
                                         sampler=self.make_sampler(optuna, seed), load_if_exists=True)
        self.distributions = {d.name: optuna.distributions.CategoricalDistribution(list(d.choices))
                              for d in space.decisions}
        self.journal_trials = [t for t in self.study.get_trials(deepcopy=False) if self._usable(t)]
        self.open: dict[int, object] = {}
        self.asked = 0

    def _usable(self, stored) -> bool:
        """A journal trial a resumed run can take up again; one the killed process had created but
        not yet given its parameters is failed and skipped (failed trials do not steer the samplers)."""
        from optuna.trial import TrialState

        if stored.user_attrs.get("hwnas") == "abandoned":
            return False
        if set(stored.params) == set(self.distributions):
            return True
        if stored.state == TrialState.RUNNING:
            from optuna.trial import Trial as OptunaTrial

            handle = OptunaTrial(self.study, stored._trial_id)
            handle.set_user_attr("hwnas", "abandoned")
            self.study.tell(handle, state=TrialState.FAIL)
        return False

    def ask(self) -> Arch:
        number = self.asked
        self.asked += 1
        if number < len(self.journal_trials):  # resuming: the journal already holds this proposal
            stored = self.open[number] = self.journal_trials[number]
            return Arch.create(self.space, stored.params)
        self.study.sampler = self.make_sampler(self.optuna, self.seed * 1_000_003 + number)
        trial = self.open[number] = self.study.ask(fixed_distributions=self.distributions)
        return Arch.create(self.space, trial.params)

    def tell(self, trial) -> None:
        from optuna.trial import Trial as OptunaTrial
        from optuna.trial import TrialState

        handle = self.open.pop(trial.number)
        if getattr(handle, "state", TrialState.RUNNING) != TrialState.RUNNING:
            return  # finished in the journal before the process stopped
        already = {}
        if not isinstance(handle, OptunaTrial):  # a journal trial taken up again
            already = handle.constraints
            handle = OptunaTrial(self.study, handle._trial_id)
        if trial.state == "failed":
            self.study.tell(handle, state=TrialState.FAIL)
            return
        for name, over in trial.violations.items():
            if name not in already:
                handle.set_constraint(name, float(over))
        # acc: the (penalised) objective, 0 for a candidate rejected unevaluated; latency, memory: as predicted
        values = [(float(trial.objective) if trial.state == "complete" else 0.0) if name == "acc"
                  else float(getattr(trial, OBJECTIVES[name][0])) for name in self.objectives]
        self.study.tell(handle, values)


def drop_torn_line(path) -> None:
    """Cut a last line that a kill left unfinished (Optuna would append after it and break the file)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


@dataclass(frozen=True)
class TPEOptions(Options):
    title = "tpe strategy"
    startup_trials: int = option(10, "--startup-trials", "tpe: uniform samples before the model is used (default 10)",
                                 type=int)

    def __post_init__(self):
        if self.startup_trials < 1:
            raise HwnasError(f"--startup-trials must be >= 1, got {self.startup_trials}")


@dataclass(frozen=True)
class NSGA2Options(Options):
    title = "nsga2 strategy"
    population: int = option(20, "--population", POPULATION_HELP, type=int)

    def __post_init__(self):
        if self.population < 2:
            raise HwnasError(f"--population must be >= 2, got {self.population}")


class TPEStrategy(OptunaStrategy):
    """Tree-structured Parzen estimator (Bergstra et al. 2011); multi-objective as MOTPE."""

    name = "tpe"
    records = (TPEOptions,)

    def __init__(self, options: TPEOptions = TPEOptions(), **changes):
        """`changes`: fields of `options` to replace (`TPEStrategy(startup_trials=4)`)."""
        self.options = dataclasses.replace(options, **changes)
        self.startup_trials = self.options.startup_trials

    def settings(self) -> dict:
        return {"startup_trials": self.startup_trials}

    def make_sampler(self, optuna, seed: int):
        # a batch asked before any is told: trials still running count as the worst seen (constant
        # liar), so that parallel proposals spread instead of piling onto one region
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials,
                                          constant_liar=self.batch > 1)


class NSGA2Strategy(OptunaStrategy):
    """NSGA-II (Deb et al. 2002): a genetic algorithm ranking by non-domination and crowding, with
    constrained domination for the budgets."""

    name = "nsga2"
    records = (NSGA2Options,)

    def __init__(self, options: NSGA2Options = NSGA2Options(), **changes):
        """`changes`: fields of `options` to replace (`NSGA2Strategy(population=4)`)."""
        self.options = dataclasses.replace(options, **changes)
        self.population = self.options.population

    def settings(self) -> dict:
        return {"population": self.population}

    def make_sampler(self, optuna, seed: int):
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population)
