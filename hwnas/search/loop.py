"""One search loop for every strategy: `run_search(problem, strategy, evaluator)`.

For a trial strategy the loop owns the run: RUN_DIR/search.json (the settings), the JSONL history
of every trial (trials.jsonl, appended as each finishes), failures recorded as failed trials,
candidates over a budget rejected unevaluated or penalised, the trial and time limits, and
`--resume`: the loop runs again from the start, and each proposal whose trial is in the history
takes the recorded outcome instead of being evaluated, so the strategy is told exactly what it
was told before (a run killed with -9 ends as an uninterrupted run of the same seed would). A
supernet strategy (fbnet) runs its own search. Either way the result is written here, once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from tqdm.auto import tqdm

from ..errors import HwnasError
from ..jsonio import atomic_write_json, read_json
from ..latency_tables.multi_device import MultiDevicePredictor
from ..runs import RunError, open_run
from ..train import ddp
from .base import Candidate, SearchProblem, SearchResult, Strategy, SupernetStrategy, TrialStrategy, \
    refuse_unused_budgets, write_result
from .evaluators import EvalRequest, Evaluator
from .objectives import choose, pareto_front
from .trials import FINISHED, HISTORY, Trial, TrialState, append_trial, read_history, repair_history, trial_seed

RUN_FILE = "search.json"
RUN_FORMAT = "hwnas.search-run"
PARETO = "pareto.json"


@dataclass(frozen=True)
class LoopConfig:
    """`trials`: evaluated trials (complete or failed; rejected ones do not count); `time_limit_s`:
    no new batch starts after this much run time (all sessions); `batch`: proposals asked before
    any of them is told (the evaluator may run a batch in parallel); `max_rejected`: proposals in
    a row over a budget before the search gives up."""

    trials: int = 20
    time_limit_s: float | None = None
    batch: int = 1
    max_rejected: int = 5000

    def __post_init__(self):
        if self.trials < 1 or self.max_rejected < 1:
            raise HwnasError(f"--trials must be >= 1, got {self.trials}")
        if self.batch < 1:
            raise HwnasError(f"--batch must be >= 1, got {self.batch}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise HwnasError(f"--time-limit must be > 0 seconds, got {self.time_limit_s}")


def run_search(problem: SearchProblem, strategy: Strategy, evaluator: Evaluator | None = None,
               loop: LoopConfig = LoopConfig(), stop_after: int | None = None) -> SearchResult:
    """Run (or resume) a search and write its result (arch.json, result.json). `stop_after`
    interrupts it deliberately after that many evaluated trials (epochs for fbnet)."""
    if isinstance(strategy, SupernetStrategy):
        refuse_unused_budgets(problem, strategy)
        result = strategy.search(problem, stop_after)
    elif isinstance(strategy, TrialStrategy):
        if evaluator is None:
            raise HwnasError(f"strategy {strategy.name} needs an evaluator")
        result = TrialLoop(problem, strategy, evaluator, loop).run(stop_after)
    else:
        raise HwnasError(f"{type(strategy).__name__} is neither a trial nor a supernet strategy")
    result = with_devices(result, problem.predictor)
    write_result(problem.run_dir, result)
    return result


def with_devices(result: SearchResult, predictor) -> SearchResult:
    """A search over several devices reports each one's predicted latency and budget; its
    `predicted_ms` is the first budgeted device's own (hwnas.latency_tables.multi_device)."""
    if not isinstance(predictor, MultiDevicePredictor):
        return result
    devices = tuple(predictor.report(result.arch))
    primary = next(d for d in devices if d["device"] == predictor.primary.name)
    return replace(result, predicted_ms=primary["predicted_ms"], devices=devices)


def _data_config(data) -> dict:
    """The data a run trains on (none for a tabular evaluator: the benchmark trained every candidate)."""
    if data is None:
        return {"data": None}
    return {"data": data.name, "num_classes": data.num_classes, "train_resolution": data.resolution}


class TrialLoop:
    def __init__(self, problem: SearchProblem, strategy: TrialStrategy, evaluator: Evaluator, loop: LoopConfig):
        self.problem, self.strategy, self.evaluator, self.loop = problem, strategy, evaluator, loop
        self.budgets = problem.budgets

    def run_config(self) -> dict:
        p = self.problem
        return {"strategy": self.strategy.name, "settings": self.strategy.settings(), "space": p.space.name,
                "resolution": p.space.resolution, "lut": p.predictor.fingerprint(),
                **_data_config(p.data), "seed": p.seed, "task_head": p.task_head,
                "budgets": self.budgets.to_dict(), "objectives": list(p.objectives),
                "evaluator": self.evaluator.describe(), **asdict(self.loop)}

    def run(self, stop_after: int | None) -> SearchResult:
        p = self.problem
        config = self.run_config()
        run_dir, state = ddp.on_main(lambda: open_run(p.run_dir, p.resume, RUN_FILE, config,
                                                      lambda path: read_json(path, "search run settings"),
                                                      ignore=("trials", "time_limit_s", "max_rejected")))
        if not ddp.is_main():  # torchrun: the other processes help train the evaluator's supernet, then leave
            self.evaluator.prepare(False)
            ddp.leave_unless_main()
        if state is None:
            atomic_write_json(run_dir / RUN_FILE, {"format": RUN_FORMAT, "config": config})
        history_path = run_dir / HISTORY
        recorded = read_history(history_path)
        if history_path.is_file() and len(recorded) != sum(1 for ln in history_path.read_text().splitlines() if ln.strip()):
            repair_history(history_path, recorded)  # a torn last line from a kill
        self.recorded = {t.number: t for t in recorded}
        self.history_path = history_path
        self.run_dir = run_dir
        self.strategy.start(p.space, p.seed, run_dir, p.objectives, self.loop.batch)
        if self.budgets.mode == "reject" and self.budgets.names():
            self.strategy.feasible = self.within_budgets  # a strategy may rank only what the loop will evaluate
        if hasattr(self.strategy, "predict"):  # a strategy that ranks candidates by their cheap objectives
            self.strategy.predict = p.predictor.predict
        self.evaluator.prepare(p.progress)
        self.elapsed_before = max((t.elapsed_s for t in recorded), default=0.0)
        self.t0 = time.perf_counter()
        trials, finished = self._loop(stop_after)
        return self._result(run_dir, trials, finished)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def _loop(self, stop_after: int | None) -> tuple[list[Trial], bool]:
        loop, p = self.loop, self.problem
        trials: list[Trial] = []
        done: dict[str, Trial] = {}  # architecture hash -> its evaluated trial (duplicates reuse it)
        evaluated = rejected_in_row = 0
        bar = tqdm(total=loop.trials, desc=f"{self.strategy.name} search", unit="trial", disable=not p.progress)
        best = None
        while evaluated < loop.trials:
            if stop_after is not None and evaluated >= stop_after:
                bar.close()
                return trials, False
            replaying = len(trials) in self.recorded
            if loop.time_limit_s is not None and not replaying and evaluated and self.elapsed() >= loop.time_limit_s:
                break
            batch = [self._propose(len(trials) + i) for i in range(min(loop.batch, loop.trials - evaluated))]
            self._evaluate_batch(batch, done)
            for trial in batch:  # told in the order asked, however the evaluations finished
                self.strategy.tell(trial)
                trials.append(trial)
                if trial.state == TrialState.INFEASIBLE:
                    rejected_in_row += 1
                    if rejected_in_row >= loop.max_rejected:
                        raise HwnasError(f"{rejected_in_row} proposals in a row were over a budget "
                                         f"({', '.join(self.budgets.names())}); raise the budgets")
                    continue
                rejected_in_row = 0
                evaluated += 1
                bar.update(1)
                if trial.state == TrialState.COMPLETE and trial.feasible and (best is None or trial.top1 > best.top1):
                    best = trial
                bar.set_postfix(best=f"{best.top1:.2f}%" if best else "-", trial=trial.number)
        bar.close()
        return trials, True

    def _predicted(self, arch):
        """The prediction of `arch` and its relative overshoot per budget (> 0: over it)."""
        pred = self.problem.predictor.predict(arch)
        return pred, self.budgets.violations(pred.latency_ms, pred.peak_activation_bytes, pred.params)

    def within_budgets(self, arch) -> bool:
        """Whether `arch` is within every budget by prediction (what reject mode evaluates)."""
        return all(v <= 0 for v in self._predicted(arch)[1].values())

    def _propose(self, number: int) -> Trial:
        """Ask the strategy; the trial is 'pending' (to evaluate), 'infeasible' (rejected), or the
        recorded one when resuming (checked to be the same proposal)."""
        p = self.problem
        arch = self.strategy.ask()
        lineage = self.strategy.lineage(arch)
        if number in self.recorded:
            trial = self.recorded[number]
            if trial.arch != arch:
                raise RunError(f"{self.history_path} trial {number} is {trial.arch.hash}, but the strategy now proposes "
                               f"{arch.hash}: the run cannot be resumed with this code; start a new --out")
            return trial
        pred, violations = self._predicted(arch)
        over = any(v > 0 for v in violations.values())
        state = TrialState.INFEASIBLE if over and self.budgets.mode == "reject" else TrialState.PENDING
        trial = Trial(number, arch, state, pred.latency_ms, pred.params, pred.peak_activation_bytes,
                      trial_seed(p.seed, arch), violations=violations,
                      lineage=lineage.to_dict() if lineage is not None else {})
        if state == TrialState.INFEASIBLE:
            trial = Trial(**{**trial.__dict__, "elapsed_s": round(self.elapsed(), 3), "note": "over a budget"})
            append_trial(self.history_path, trial)
        return trial

    def _evaluate_batch(self, batch: list[Trial], done: dict[str, Trial]) -> None:
        """Evaluate the batch's pending trials (one per architecture not evaluated before), each
        appended to the history as its outcome arrives (completion order: a kill loses only the
        trials in flight); then duplicates take their original's figures. Replaces in `batch`."""
        index = {t.number: i for i, t in enumerate(batch)}
        for trial in batch:  # taken from the history on resume
            if trial.state in (TrialState.COMPLETE, TrialState.FAILED):
                done.setdefault(trial.arch.hash, trial)
        first: dict[str, Trial] = {}
        for trial in batch:
            if trial.state == TrialState.PENDING and trial.arch.hash not in done:
                first.setdefault(trial.arch.hash, trial)
        requests = [self._request(t) for t in first.values()]
        for outcome in (self.evaluator.evaluate_batch(requests) if requests else ()):
            trial = batch[index[outcome.number]]
            batch[index[outcome.number]] = done[trial.arch.hash] = self._finish(trial, outcome, None)
        for i, trial in enumerate(batch):
            if trial.state == TrialState.PENDING:
                trial = batch[i] = self._finish(trial, None, done.get(trial.arch.hash))
            if trial.state != TrialState.INFEASIBLE:
                done.setdefault(trial.arch.hash, trial)

    def _request(self, trial: Trial) -> EvalRequest:
        """The evaluation of a trial; a Lamarckian one's weights files, made absolute."""
        parent, own = trial.lineage.get("parent_weights"), trial.lineage.get("weights")
        return EvalRequest(trial.number, trial.arch, trial.seed,
                           parent_weights=str(self.run_dir / parent) if parent else None,
                           weights_out=str(self.run_dir / own) if own else None)

    def _finish(self, trial: Trial, outcome, duplicate: Trial | None) -> Trial:
        """The evaluated trial (or a duplicate's figures), appended to the history."""
        if duplicate is not None:
            metrics, error, wall = duplicate.metrics, "" if duplicate.state == TrialState.COMPLETE else duplicate.note, 0.0
            note = f"duplicate of trial {duplicate.number}"
        else:
            metrics, error, wall = outcome.metrics, outcome.error, outcome.wall_s
            note = error
        state = TrialState.COMPLETE if metrics else TrialState.FAILED
        objective = None
        if metrics:
            objective = self.budgets.penalised(metrics["top1"], trial.violations)
        finished = Trial(**{**trial.__dict__, "state": state, "metrics": dict(metrics or {}), "objective": objective,
                            "wall_s": round(wall, 3), "elapsed_s": round(self.elapsed(), 3),
                            "note": note if duplicate is None else (note if not error else f"{note}: {error}")})
        append_trial(self.history_path, finished)
        return finished

    def _result(self, run_dir, trials: list[Trial], finished: bool) -> SearchResult:
        p = self.problem
        best = choose(trials, p.objectives)
        counts = {s.value: sum(t.state == s for t in trials) for s in FINISHED}
        if best is None:
            raise HwnasError(f"no trial of {len(trials)} finished within the budgets ({counts['failed']} failed, "
                             f"{counts['infeasible']} over a budget); see {run_dir / HISTORY}")
        front = pareto_front(trials, p.objectives)
        if len(p.objectives) > 1:
            write_front(run_dir, front, trials, p)
        elapsed = self.elapsed()
        evaluated = counts["complete"] + counts["failed"]
        details = {
            "space": p.space.name, "resolution": p.space.resolution, "data": p.data.name if p.data else None,
            "lut": p.lut_source,
            "evaluator": self.evaluator.describe(), "objectives": list(p.objectives), "budgets": p.budgets.to_dict(),
            "best_trial": best.to_dict(), "best_score": best.top1, "trials": evaluated, "trial_states": counts,
            "front_size": len(front), "trials_per_minute": round(60.0 * evaluated / max(elapsed, 1e-9), 3),
            "meets_budgets": {name: over <= 1e-9 for name, over in best.violations.items()},
            "predicted_params": best.params, "predicted_peak_activation_bytes": best.peak_activation_bytes,
            **({"latency_derived": p.predictor.derived} if p.predictor.derived else {}),
            **self.evaluator.result_details(best.arch),
        }
        candidates = tuple(Candidate(t.arch, t.predicted_ms, t.top1, note=f"trial {t.number}") for t in front)
        return SearchResult(self.strategy.name, best.arch, best.predicted_ms, p.budget_ms, (), candidates, elapsed,
                            finished, details)


def write_front(run_dir, front: list[Trial], trials: list[Trial], problem: SearchProblem) -> None:
    """pareto.json (the non-dominated feasible trials) and pareto.png (every trial, the front and
    the budget lines)."""
    from .plots import plot_pareto

    atomic_write_json(run_dir / PARETO, {"objectives": list(problem.objectives), "budgets": problem.budgets.to_dict(),
                                         "front": [t.to_dict() for t in front]})
    plot_pareto(trials, front, problem.objectives, problem.budgets, run_dir / "pareto.png")
