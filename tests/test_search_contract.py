"""The contract every search strategy meets, on the tiny space with a cheap evaluator: valid
proposals, every budget met, failures recorded, resume after kill -9 equal to an uninterrupted run,
a non-dominated Pareto front, and flags the strategy does not use refused."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hwnas.core.arch import Arch, load_arch
from hwnas.cli import main
from hwnas.runs import RunError, read_jsonl
from hwnas.search import STRATEGIES, EvolutionStrategy, LoopConfig, SearchProblem, read_history, run_search
from hwnas.search.evaluators import SyntheticEvaluator
from hwnas.search.registry import make_evaluator
from hwnas.search.objectives import dominates, hypervolume_2d, objective_values, parse_memory_budget
from hwnas.core.spaces import get_space
from search_contract_setup import (NAMES, SUPERNET, TRIALS, make_problem, memory_table, quantile_budgets, run,
                                   setup_for, tiny_setup)

TESTS = Path(__file__).resolve().parent
TRIAL_STRATEGIES = [n for n in NAMES if n not in SUPERNET]


@pytest.fixture(scope="module")
def tiny():
    return tiny_setup()


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


@pytest.fixture(params=TRIAL_STRATEGIES)
def sampler(request):
    return request.param


def test_every_registered_strategy_is_in_the_contract():
    assert set(STRATEGIES) == set(NAMES)


def test_proposals_are_valid_and_results_meet_every_budget(name, tiny, tmp_path):
    setup = tiny if name != "darts" else setup_for(name)
    space, predictor, _ = setup
    result = run(name, tmp_path / "run")
    problem = make_problem(name, *setup, tmp_path / "x")
    pred = predictor.predict(result.arch)
    assert result.arch.space == space.name and load_arch(tmp_path / "run" / "arch.json") == result.arch
    assert pred.latency_ms <= problem.budget_ms
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["meets_budget"] and doc["arch_hash"] == result.arch.hash
    if name in SUPERNET:
        return
    assert pred.peak_activation_bytes <= problem.memory_budget and pred.params <= problem.params_budget
    assert all(doc["meets_budgets"].values()) and set(doc["meets_budgets"]) == {"latency", "memory", "params"}
    history = read_history(tmp_path / "run" / "trials.jsonl")
    assert [t.number for t in history] == list(range(len(history)))
    for t in history:  # every proposal is an architecture of the space (read back through validation)
        space.validate(t.arch.choice_map)
        assert t.predicted_ms == pytest.approx(predictor.latency_ms(t.arch))
        assert (t.state == "infeasible") == (not t.feasible)  # reject mode: over a budget is never evaluated
    assert sum(t.state != "infeasible" for t in history) == TRIALS
    best = max((t for t in history if t.state == "complete"), key=lambda t: t.top1)
    assert result.arch == best.arch  # the most accurate trial within the budgets


def test_failed_trials_are_recorded_and_the_search_goes_on(sampler, tmp_path):
    run(sampler, tmp_path / "run", fail_fraction=0.4)
    history = read_history(tmp_path / "run" / "trials.jsonl")
    failed = [t for t in history if t.state == "failed"]
    assert failed and all("synthetic failure" in t.note and t.top1 is None for t in failed)
    assert any(t.state == "complete" for t in history)
    assert sum(t.state != "infeasible" for t in history) == TRIALS


def _kill_when(proc, ready, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the search ended (rc {proc.returncode}) before it could be killed")
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the search made no progress to kill")


def test_resume_after_kill_9_equals_an_uninterrupted_run(name, tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    # the Lamarckian strategies evaluate few distinct children (repeats are looked up, not evaluated):
    # each evaluation is made slower and the run killed earlier, so that it is killed mid-way
    lamarckian = name in ("nash", "lemonade")
    delay, lines = ("1.0", 2) if lamarckian else ("0.25", 6)
    proc = subprocess.Popen([sys.executable, str(TESTS / "search_contract_setup.py"), name, str(killed), delay],
                            env=env, cwd=TESTS.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if name in SUPERNET:
        _kill_when(proc, lambda: (killed / "log.jsonl").is_file() and len(read_jsonl(killed / "log.jsonl")) >= 1)
    else:
        _kill_when(proc, lambda: (killed / "trials.jsonl").is_file()
                   and sum(1 for _ in open(killed / "trials.jsonl")) >= lines)
    assert not (killed / "result.json").exists()
    resumed = run(name, killed, resume=True)
    full = run(name, tmp_path / "full")
    assert resumed.finished and resumed.arch == full.arch
    if name in ("fbnet", "darts"):
        checkpoint = "supernet.pt" if name == "fbnet" else "darts_supernet.pt"
        a = torch.load(tmp_path / "full" / checkpoint, weights_only=True)["supernet"]
        b = torch.load(killed / checkpoint, weights_only=True)["supernet"]
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k.startswith("alphas"))
        return
    if name == "enas":  # the controller, its optimiser and the controller samples (trials) are the same
        a, b = (torch.load(d / "enas.pt", weights_only=True) for d in (tmp_path / "full", killed))
        assert all(torch.allclose(a["controller"][k], b["controller"][k], atol=1e-6) for k in a["controller"])
        assert a["trials"] == b["trials"] and a["curve"] == b["curve"]
        return
    key = lambda t: (t.number, t.arch.hash, t.state, t.metrics)  # noqa: E731
    assert [key(t) for t in read_history(killed / "trials.jsonl")] == \
        [key(t) for t in read_history(tmp_path / "full" / "trials.jsonl")]


def test_pareto_front_is_non_dominated(sampler, tiny, tmp_path):
    objectives = ("acc", "latency", "memory")
    result = run(sampler, tmp_path / "run", objectives=objectives)
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())["front"]
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 0
    history = read_history(tmp_path / "run" / "trials.jsonl")
    pool = [t for t in history if t.state == "complete" and t.feasible]
    values = {t.number: objective_values(t, objectives) for t in pool}
    members = {doc["number"] for doc in front}
    assert members and members <= set(values)
    for m in members:  # nothing feasible dominates a front member
        assert not any(dominates(values[o], values[m]) for o in values)
    for t in pool:  # everything else feasible is dominated by the front (or repeats a member's architecture)
        if t.number not in members:
            assert any(dominates(values[m], values[t.number]) or values[m] == values[t.number] for m in members)
    assert result.arch.hash == front[0]["hash"] == max(pool, key=lambda t: t.top1).arch.hash


def test_penalise_mode_evaluates_over_budget_candidates_but_never_picks_one(tiny, tmp_path):
    space, predictor, data = tiny
    problem = make_problem("random", space, predictor, data, tmp_path / "run")
    problem = SearchProblem(**{**problem.__dict__, "budget_mode": "penalise"})
    result = run_search(problem, STRATEGIES["random"](), SyntheticEvaluator(), LoopConfig(trials=TRIALS))
    history = read_history(tmp_path / "run" / "trials.jsonl")
    over = [t for t in history if not t.feasible]
    assert over and all(t.state == "complete" and t.objective < t.top1 for t in over)
    assert len(history) == TRIALS and predictor.latency_ms(result.arch) <= problem.budget_ms


def test_evolution_mutates_one_decision_and_ages_its_population(tiny):
    space = tiny[0]
    strategy = EvolutionStrategy(population=3, sample_size=2)
    strategy.start(space, 0, Path("."), ("acc",))
    parent = Arch.create(space, space.sample(__import__("random").Random(1)))
    child = strategy.mutate(parent)
    assert sum(a != b for a, b in zip(parent.choices, child.choices)) == 1
    from hwnas.search import Trial

    for i in range(5):
        strategy.tell(Trial(i, parent, "complete", 1.0, 1, 1, 0, {"top1": float(i)}, float(i)))
    assert [score for _, score in strategy.population] == [2.0, 3.0, 4.0]  # the oldest left, not the worst


def test_hypervolume_of_a_known_front():
    assert hypervolume_2d([(50.0, 1.0), (60.0, 2.0)], ref=(0.0, 3.0)) == pytest.approx(50 * 1 + 60 * 1)
    assert hypervolume_2d([(50.0, 1.0), (40.0, 2.0)], ref=(0.0, 3.0)) == pytest.approx(50 * 2)


def test_a_latency_budget_works_for_a_space_without_per_layer_costs(tmp_path):
    """A sampler needs no per-layer costs: a stage-wise space's budget comes from sampled extremes."""
    from hwnas.latency_tables.predictor import LatencyPredictor
    from hwnas.search.budget import latency_range_ms, parse_budget, resolve_budget
    from lut_fixtures import mac_table

    space = get_space("mobilenetv3", resolution=32, num_classes=10)
    predictor = LatencyPredictor(mac_table(space), space)
    low, high = latency_range_ms(predictor, samples=200)
    budget = resolve_budget(parse_budget("40%"), predictor)
    assert low < budget < high
    _, _, data = tiny_setup()
    problem = SearchProblem(space, predictor, budget, data, tmp_path / "run", progress=False)
    result = run_search(problem, STRATEGIES["evolution"](population=3, sample_size=2), SyntheticEvaluator(),
                        LoopConfig(trials=5))
    assert predictor.latency_ms(result.arch) <= budget


# --- the command line -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lut_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "tiny_lut.json"
    memory_table(tiny[0]).save(path)
    return path


@pytest.mark.parametrize("strategy, flags, message", [
    ("random", ["--population", "5"], "--population is not used by --strategy random"),
    ("random", ["--top-k", "1"], "--top-k is not used by --strategy random"),
    ("fbnet", ["--trials", "3"], "--trials is not used by --strategy fbnet"),
    ("fbnet", ["--memory-budget", "1MB"], "--memory-budget is not used by --strategy fbnet"),
    ("fbnet", ["--evaluator", "shared"], "--evaluator is not used"),
    ("enas", ["--trials", "3"], "--trials is not used by --strategy enas"),
    ("fbnet", ["--policy-update", "ppo"], "it is for strategies enas, mnas"),
    ("fbnet", ["--darts-variant", "darts-minus"], "it is for strategies darts"),
    ("mnas", ["--reward", "best"], "invalid choice: 'best'"),
    ("tpe", ["--supernet", "x.pt"], "with --evaluator scratch"),
    ("evolution", ["--startup-trials", "3"], "it is for strategies tpe"),
    ("nsga2", ["--objectives", "latency,acc"], "give acc first"),
    ("random", ["--memory-budget", "lots"], "memory budget 'lots' is not understood"),
    ("random", ["--penalty", "2"], "--budget-mode penalise only"),
])
def test_unused_and_bad_flags_are_refused(lut_file, tmp_path, capsys, strategy, flags, message):
    out = tmp_path / "run"
    argv = ["search", "--strategy", strategy, "--space", "tiny", "--lut", str(lut_file), "--data", "digits",
            "--out", str(out), "--no-progress", *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_flags_are_refused(lut_file, tmp_path, capsys):
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", str(lut_file), "--data", "digits",
                 "--out", str(tmp_path / "r"), "--bogus", "1"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_search_with_short_training_and_runs_show(lut_file, tmp_path, capsys):
    """The real scratch evaluator end to end: evolution, two objectives, a memory budget."""
    out = tmp_path / "run"
    space, predictor, _ = tiny_setup()
    memory, _ = quantile_budgets(space, predictor)
    assert main(["search", "--strategy", "evolution", "--space", "tiny", "--lut", str(lut_file), "--data", "digits",
                 "--out", str(out), "--no-progress", "--trials", "3", "--population", "2", "--sample-size", "1",
                 "--epochs", "1", "--max-batches", "2", "--batch-size", "32", "--latency-budget", "60%",
                 "--memory-budget", str(memory), "--objectives", "acc,latency"]) == 0
    printed = capsys.readouterr().out
    assert "best of 3 evaluated trials" in printed and "Pareto front" in printed
    history = read_history(out / "trials.jsonl")
    scores = [t.top1 for t in history if t.state == "complete"]
    assert len(scores) == 3 and all(0.0 <= s <= 100.0 for s in scores)
    assert all(t.peak_activation_bytes <= memory for t in history if t.state == "complete")
    assert main(["runs", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "evolution search of tiny@32" in shown and "best trial within the budgets" in shown
    assert "Pareto front" in shown and "result: evolution" in shown
    assert main(["runs", "show", str(tmp_path / "nothing")]) == 2


def test_cli_search_with_the_shared_evaluator(lut_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--strategy", "tpe", "--evaluator", "shared", "--space", "tiny", "--lut", str(lut_file),
                 "--data", "digits", "--out", str(out), "--no-progress", "--trials", "3", "--startup-trials", "2",
                 "--epochs", "1", "--max-batches", "2", "--batch-size", "16", "--calib-batches", "2",
                 "--calib-batch-size", "16", "--latency-budget", "50%"]) == 0
    assert "shared evaluator" in capsys.readouterr().out
    assert (out / "spos_supernet.pt").is_file() and (out / "optuna.journal").is_file()
    assert sum(t.state == "complete" for t in read_history(out / "trials.jsonl")) >= 1


def test_shared_evaluator_scores_with_inherited_weights_and_reuses_its_supernet(tiny, tmp_path):
    space, predictor, data = tiny
    problem = make_problem("random", space, predictor, data, tmp_path / "run")
    opts = dict(epochs=1, batch_size=32, max_batches=3, calib_batches=2, calib_batch_size=32)
    evaluator = make_evaluator("shared", problem, supernet=tmp_path / "spos.pt", **opts)
    evaluator.prepare()
    archs = [Arch.create(space, space.sample(__import__("random").Random(i))) for i in range(3)]
    scores = [evaluator.evaluate(a) for a in archs]
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert set(json.loads((tmp_path / "spos.scores.json").read_text())["scores"]) == {a.hash for a in archs}
    # a second search with the same file reuses the supernet (no training) and the cached scores
    stamp = (tmp_path / "spos.pt").stat().st_mtime_ns
    again = pickle.loads(pickle.dumps(make_evaluator("shared", problem, supernet=tmp_path / "spos.pt", **opts)))
    again.prepare()
    assert (tmp_path / "spos.pt").stat().st_mtime_ns == stamp
    assert [again.evaluate(a) for a in archs] == scores
    # recalibration is deterministic: without the cache the same scores come back
    (tmp_path / "spos.scores.json").unlink()
    fresh = make_evaluator("shared", problem, supernet=tmp_path / "spos.pt", **opts)
    assert [fresh.evaluate(a) for a in archs] == pytest.approx(scores)
    other = make_evaluator("shared", problem, supernet=tmp_path / "spos.pt", **{**opts, "epochs": 2, "batch_size": 16})
    with pytest.raises(RunError, match="another --supernet"):
        other.prepare()


def test_memory_budget_parsing():
    assert parse_memory_budget("2MB") == 2_000_000 and parse_memory_budget("1KiB") == 1024
    assert parse_memory_budget("300000") == 300_000


def test_a_torn_last_line_of_the_history_is_dropped_on_resume(tmp_path):
    run("evolution", tmp_path / "cut", stop_after=4)
    with open(tmp_path / "cut" / "trials.jsonl", "a") as handle:
        handle.write('{"number": 99, "arch": {"sp')  # a kill in the middle of a write
    resumed = run("evolution", tmp_path / "cut", resume=True)
    full = run("evolution", tmp_path / "full")
    assert resumed.arch == full.arch
    assert [t.arch.hash for t in read_history(tmp_path / "cut" / "trials.jsonl")] == \
        [t.arch.hash for t in read_history(tmp_path / "full" / "trials.jsonl")]


def test_a_search_whose_budgets_nothing_meets_stops_with_a_clear_error(tiny, tmp_path):
    from hwnas.errors import HwnasError

    space, predictor, data = tiny
    problem = SearchProblem(space, predictor, None, data, tmp_path / "run", progress=False, memory_budget=1)
    with pytest.raises(HwnasError, match=r"20 proposals in a row were over a budget \(memory\)"):
        run_search(problem, STRATEGIES["random"](), SyntheticEvaluator(), LoopConfig(trials=3, max_rejected=20))
    assert len(read_history(tmp_path / "run" / "trials.jsonl")) == 20  # recorded all the same


def test_a_shared_score_does_not_depend_on_what_ran_before(tiny, tmp_path):
    """Held-out images are scored without augmentation and batch-norm calibration draws seeded
    images, so a score is a function of the architecture alone (not of torch's global generator):
    the same on a Ray worker as here, and in any order of trials."""
    import random as pyrandom

    space, predictor, data = tiny
    problem = make_problem("random", space, predictor, data, tmp_path / "run")
    evaluator = make_evaluator("shared", problem, epochs=1, batch_size=32, max_batches=2, calib_batches=2,
                               calib_batch_size=32, score_batches=1)
    archs = [Arch.create(space, space.sample(pyrandom.Random(i))) for i in range(3)]
    evaluator.prepare()
    first = []
    for seed, arch in enumerate(archs):
        torch.manual_seed(seed)
        first.append(evaluator.score(arch, 0))
    fresh = pickle.loads(pickle.dumps(evaluator))  # no score cache; other global RNG states
    torch.manual_seed(1234)
    assert [fresh.score(a, 0) for a in reversed(archs)] == list(reversed(first))
    assert evaluator.data.val.dataset.augment == "none"
