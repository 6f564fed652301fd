"""What FBNet derives from a trained supernet: the argmax architecture fitted to the budget, the
top-k most probable architectures scored one-shot, and (optionally) the finalists: the argmax and
samples of the learned distribution trained briefly from scratch, the best of them the result."""

from __future__ import annotations

import math
import random
import time

from tqdm.auto import tqdm

from ..core.arch import Arch
from ..train.data import split_train
from ..jsonio import atomic_write_json, read_json
from ..core.spaces import LayerwiseSpace
from ..train.loop import evaluate
from .base import Candidate, SearchProblem, SearchResult
from .budget import BudgetStep, fit_to_budget, top_k_choices
from .supernet import Supernet, path_indices

FINALISTS = "finalists.json"


def _finite_or_lowest(score: float | None) -> float:
    """A diverged training (NaN top-1) or a missing score never wins."""
    return score if score is not None and math.isfinite(score) else -math.inf


def budget_fitter(problem: SearchProblem, log_probs, fill: bool):
    """choices -> (arch, budget steps): repaired if over the budget, filled if `fill`."""
    space, predictor, budget = problem.space, problem.predictor, problem.budget_ms

    def fit(choices):
        if budget is None:
            return Arch.create(space, choices), []
        return fit_to_budget(space, predictor, choices, log_probs, budget, fill=fill)
    return fit


def sample_finalists(space: LayerwiseSpace, probs, first: Arch, count: int, fit, seed: int,
                     max_draws: int = 2000) -> list[tuple[Arch, list[BudgetStep]]]:
    """Up to `count - 1` distinct samples of the per-layer distributions `probs`, each fitted to the
    budget by `fit(choices) -> (arch, steps)` and none equal to `first` (the fitted argmax, the
    first finalist). The draws depend only on `seed` and `probs`, so a resumed search draws the
    same finalists."""
    rng = random.Random(seed)
    picks, seen = [], {first.hash}
    for _ in range(max_draws):
        if len(picks) >= count - 1:
            break
        choices = {layer.name: layer.candidates[rng.choices(range(len(p)), weights=p)[0]]
                   for layer, p in zip(space.layers, probs)}
        arch, steps = fit(choices)
        if arch.hash not in seen:
            seen.add(arch.hash)
            picks.append((arch, steps))
    return picks


def report_fit(problem: SearchProblem, argmax: Arch, steps: list[BudgetStep]) -> None:
    if not steps or not problem.progress:
        return
    verb = "exceeds" if steps[0].kind == "downgrade" else "leaves unused part of"
    tqdm.write(f"the argmax architecture, predicted at {problem.predictor.latency_ms(argmax):.4g} ms, {verb} the budget "
               f"{problem.budget_ms:.4g} ms: {'repaired' if verb == 'exceeds' else 'filled'} with {len(steps)} "
               f"LUT-guided {steps[0].kind}(s):")
    for step in steps:
        tqdm.write(f"  {step.layer}: {step.before} -> {step.after} ({-step.saved_ms:+.4g} ms, "
                   f"log-prob cost {step.log_prob_cost:.3f}) -> {step.latency_ms:.4g} ms")


def finalize(net: Supernet, problem: SearchProblem, cfg, log, wall: float, finished: bool,
             strategy: str = "fbnet") -> SearchResult:
    """The argmax fitted to the budget (repaired if over it, filled if `fill_budget` and under it),
    plus the top-k most probable architectures fitted the same way, each scored one-shot (its
    path through the shared weights) on the architecture split, never on val."""
    space, predictor, budget = problem.space, problem.predictor, problem.budget_ms
    log_probs = net.log_probabilities()
    argmax_choices = net.choices(net.argmax_indices())
    argmax = Arch.create(space, argmax_choices)
    fit = budget_fitter(problem, log_probs, cfg.fill_budget)
    arch, steps = fit(argmax_choices)
    report_fit(problem, argmax, steps)
    _, score_split = split_train(problem.data.train, cfg.arch_split, problem.seed)
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for choices, _ in [(argmax_choices, None)] + top_k_choices(space, log_probs, cfg.top_k):
        cand, cand_steps = (arch, steps) if choices is argmax_choices else fit(choices)
        if cand.hash in seen:
            continue
        seen.add(cand.hash)
        indices = path_indices(space, cand)
        joint = sum(lp[i] for lp, i in zip(log_probs, indices))
        score, _ = evaluate(net, score_split, forward=lambda x, idx=indices: net.forward_path(x, idx))
        candidates.append(Candidate(cand, predictor.latency_ms(cand), score, joint, tuple(cand_steps),
                                    note="argmax" if not candidates else ""))
        if len(candidates) >= max(1, cfg.top_k):
            break
    details = {
        "space": space.name, "resolution": space.resolution, "lut": problem.lut_source,
        "epochs_done": log[-1]["epoch"] if log else 0, "epochs": cfg.epochs,
        "argmax_arch": argmax.to_dict(), "argmax_latency_ms": predictor.latency_ms(argmax),
        "expected_latency_ms": log[-1]["expected_latency_ms"] if log else None,
        "fastest_latency_ms": predictor.fastest_latency_ms(), "train_resolution": problem.data.resolution,
        "data": problem.data.name, "oneshot_top1_arch_split": candidates[0].score if candidates else None,
        "loss_kind": cfg.loss_kind(budget), "mixed_op": cfg.mixed_op, "fill_budget": cfg.fill_budget,
    }
    return SearchResult(strategy, arch, predictor.latency_ms(arch), budget, tuple(steps), tuple(candidates),
                        wall, finished, details)


def pick_finalist(net: Supernet, problem: SearchProblem, cfg, result: SearchResult, evaluator, custom: bool,
                  run_dir) -> SearchResult:
    """FBNet's last step: train the fitted argmax and samples of the learned distribution from
    scratch, return the best. Each finished training is kept in finalists.json (atomically), and
    a resumed search reuses it by architecture hash, so none is trained twice."""
    space, predictor, budget = problem.space, problem.predictor, problem.budget_ms
    log_probs = net.log_probabilities()
    probs = [p.tolist() for p in net.probabilities()]
    picks = [(result.arch, list(result.budget_steps))]
    picks += sample_finalists(space, probs, result.arch, cfg.finalists, budget_fitter(problem, log_probs, cfg.fill_budget),
                              problem.seed)
    path = run_dir / FINALISTS
    stored = read_json(path, "fbnet finalists") if path.is_file() else {}
    reuse = stored.get("finalist_epochs") == cfg.finalist_epochs and stored.get("custom_evaluator") == custom
    done = {t["hash"]: t for t in stored.get("trials", [])} if reuse else {}
    trials = []
    for i, (arch, steps) in enumerate(tqdm(picks, desc="fbnet finalists", unit="arch", disable=not problem.progress)):
        if arch.hash not in done:
            t0 = time.perf_counter()
            score = evaluator.evaluate(arch, problem.seed)
            log_prob = sum(lp[j] for lp, j in zip(log_probs, path_indices(space, arch)))
            trial = Candidate(arch, predictor.latency_ms(arch), score, log_prob, tuple(steps),
                              note="argmax" if i == 0 else "sample").to_dict()
            done[arch.hash] = {**trial, "wall_s": round(time.perf_counter() - t0, 3)}
            atomic_write_json(path, {"finalist_epochs": cfg.finalist_epochs, "custom_evaluator": custom,
                                     "trials": list(done.values())})
        trials.append(done[arch.hash])
    best_index = max(range(len(picks)), key=lambda i: _finite_or_lowest(trials[i]["score"]))
    best, best_steps = picks[best_index]
    if problem.progress:
        tqdm.write("finalists (short-training top-1 on held-out data): " + ", ".join(
            f"{t['hash']} {t['score']:.1f}%" + (" (argmax)" if t["note"] == "argmax" else "") for t in trials)
            + f"; picked {best.hash}")
    details = {**result.details, "finalists": trials, "picked": "argmax" if best_index == 0 else "sample",
               "finalist_epochs": cfg.finalist_epochs}
    return SearchResult(result.strategy, best, predictor.latency_ms(best), budget, tuple(best_steps), result.candidates,
                        result.wall_s + sum(t["wall_s"] for t in trials), result.finished, details)
