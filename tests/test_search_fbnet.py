"""The fbnet strategy on the tiny space: budgets, gradient signs, repair, resume, fast failures.

Latency tables here are test fixtures (latency proportional to MACs, see lut_fixtures.py)."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from hwnas.core.arch import Arch, load_arch
from hwnas.cli import main
from hwnas.train.data import load_data
from hwnas.errors import LutError
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.runs import read_jsonl
from hwnas.search import (STRATEGIES, BudgetError, Evaluator, FBNetConfig, FBNetStrategy, LoopConfig, RandomStrategy,
                          SearchProblem, parse_budget, read_history, repair_to_budget, resolve_budget, run_search,
                          top_k_choices)
from hwnas.search.registry import make_evaluator
from hwnas.search.budget import FILL_MAX_LOG_RATIO, fill_budget, fit_to_budget, latency_range_ms
from hwnas.search.latency_loss import budget_penalty, latency_aware_loss
from hwnas.search.supernet import Supernet
from hwnas.core.spaces import get_space
from lut_fixtures import mac_table


@pytest.fixture(scope="module")
def space():
    return get_space("tiny")


@pytest.fixture(scope="module")
def predictor(space):
    return LatencyPredictor(mac_table(space), space)


@pytest.fixture(scope="module")
def lut_file(space, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "tiny_lut.json"
    mac_table(space).save(path)
    return path


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=32, seed=0)


def problem(space, predictor, data, run_dir, budget=None, resume=False, seed=0):
    return SearchProblem(space, predictor, budget, data, Path(run_dir), seed=seed, resume=resume, progress=False)


FAST = dict(batch_size=32, max_batches=3, top_k=2, warmup_epochs=0)


# --- budgets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, ms", [("8ms", 8.0), ("8", 8.0), ("1.5s", 1500.0), ("900us", 0.9), ("2.5 ms", 2.5),
                                      ("1e1ms", 10.0)])
def test_budget_parsing(text, ms):
    spec = parse_budget(text)
    assert spec.unit == "ms" and spec.value == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "-3ms", "0", "8 parsecs", "120%", "", "nanms"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(BudgetError):
        parse_budget(text)


def test_percent_budget_spans_the_space(predictor):
    fastest, slowest = latency_range_ms(predictor)
    assert resolve_budget(parse_budget("0%"), predictor) == pytest.approx(fastest)
    assert resolve_budget(parse_budget("100%"), predictor) == pytest.approx(slowest)
    assert fastest == pytest.approx(predictor.fastest_latency_ms())


def test_infeasible_budget_names_the_fastest(predictor):
    fastest = predictor.fastest_latency_ms()
    with pytest.raises(BudgetError, match=f"fastest .* {fastest:.4g} ms"):
        resolve_budget(parse_budget(f"{fastest * 0.9}ms"), predictor)


# --- gradients ----------------------------------------------------------------------------------
def test_expected_latency_gradient_sign(space, predictor):
    alphas = [torch.zeros(len(layer.candidates), requires_grad=True) for layer in space.layers]
    expected = predictor.expected_latency([a.softmax(0) for a in alphas])
    expected.backward()
    _, per_layer = predictor.layer_tables()
    for alpha, lat in zip(alphas, per_layer):
        slow, fast = int(lat.argmax()), int(lat.argmin())
        assert alpha.grad[slow] > 0  # more weight on a slower candidate raises the expected latency
        assert alpha.grad[fast] < 0
        # exactly p_i * (lat_i - E_layer) for a softmax
        p = torch.full_like(lat, 1 / len(lat))
        assert torch.allclose(alpha.grad, p * (lat - (p * lat).sum()), atol=1e-6)


def test_budget_penalty_pushes_toward_the_faster_candidate(space, predictor):
    alphas = [torch.zeros(len(layer.candidates), requires_grad=True) for layer in space.layers]
    expected = predictor.expected_latency([a.softmax(0) for a in alphas])
    tight = float(expected.detach()) * 0.8
    ce = torch.tensor(1.0)
    latency_aware_loss(ce, expected, "budget", tight, weight=1.0).backward()
    _, per_layer = predictor.layer_tables()
    for alpha, lat in zip(alphas, per_layer):
        assert alpha.grad[int(lat.argmin())] < 0 < alpha.grad[int(lat.argmax())]
    # one descent step lowers the expected latency
    with torch.no_grad():
        stepped = predictor.expected_latency([(a - 0.5 * a.grad).softmax(0) for a in alphas])
    assert stepped < expected
    # under the budget, the hinge exerts no pressure
    loose = torch.zeros(3, requires_grad=True)
    budget_penalty((loose * torch.tensor([1.0, 2.0, 3.0])).sum() + 1.0, budget_ms=10.0).backward()
    assert torch.all(loose.grad == 0)


def test_fbnet_loss_grows_with_latency():
    ce = torch.tensor(2.0)
    lat = torch.tensor([4.0, 8.0], requires_grad=True)
    losses = [latency_aware_loss(ce, lat[i], "fbnet", None) for i in range(2)]
    assert losses[1] > losses[0]
    losses[0].backward()
    assert lat.grad[0] > 0


@pytest.mark.parametrize("mixed_op", ["hard", "soft"])
def test_architecture_parameters_get_gradients(space, mixed_op):
    torch.manual_seed(0)
    net = Supernet(get_space("tiny"), mixed_op)
    for m in net.modules():  # undo the zero-init of residual branches, which makes candidates equal at first
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32), temperature=1.0), torch.arange(4))
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.alphas)
    net.zero_grad()
    net(torch.randn(4, 3, 32, 32), temperature=1.0, arch_grad=False).sum().backward()
    assert all(a.grad is None for a in net.alphas)


@pytest.mark.parametrize("mixed_op", ["hard", "soft"])
def test_latency_term_is_taken_under_the_sampled_weights_and_damped_by_the_temperature(space, predictor, mixed_op):
    """FBNet's LAT is the sum of the candidates' latencies weighted by the same Gumbel-softmax
    sample as the forward pass; its gradient then shrinks with the temperature as CE's does."""
    grads = {}
    for tau in (1.0, 5.0):
        torch.manual_seed(0)
        net = Supernet(get_space("tiny"), mixed_op)
        net(torch.randn(2, 3, 32, 32), temperature=tau)
        assert len(net.sampled_weights) == len(net.alphas)
        assert all(float(w.detach().sum()) == pytest.approx(1.0) for w in net.sampled_weights)
        predictor.expected_latency(net.sampled_weights).backward()
        grads[tau] = sum(float(a.grad.abs().sum()) for a in net.alphas)
    assert grads[1.0] > 0 and grads[5.0] < grads[1.0] / 2


# --- repair and top-k ---------------------------------------------------------------------------
def test_repair_meets_the_budget_with_cheap_downgrades(space, predictor):
    _, per_layer = predictor.layer_tables()
    slowest = {layer.name: layer.candidates[int(lat.argmax())] for layer, lat in zip(space.layers, per_layer)}
    # the distribution is sure about layer0 and layer1, unsure about layer2
    log_probs = []
    for layer in space.layers:
        sure = layer.name != "layer2"
        lp = [math.log(0.9 if c == slowest[layer.name] else 0.1 / (len(layer.candidates) - 1)) if sure
              else math.log(1 / len(layer.candidates)) for c in layer.candidates]
        log_probs.append(lp)
    start = predictor.latency_ms(Arch.create(space, slowest))
    budget = start - 0.5 * float(per_layer[2].max() - per_layer[2].min())
    arch, steps = repair_to_budget(space, predictor, slowest, log_probs, budget)
    assert predictor.latency_ms(arch) <= budget
    assert steps and [s.layer for s in steps] == ["layer2"] * len(steps)  # the unsure layer pays
    lats = [start] + [s.latency_ms for s in steps]
    assert all(b < a for a, b in zip(lats, lats[1:]))
    # an architecture already within the budget is left alone
    same, none = repair_to_budget(space, predictor, slowest, log_probs, start)
    assert none == [] and same.choice_map == slowest


def test_fill_uses_the_budget_without_exceeding_it(space, predictor):
    _, per_layer = predictor.layer_tables()
    fastest = {layer.name: layer.candidates[int(lat.argmin())] for layer, lat in zip(space.layers, per_layer)}
    uniform = [[math.log(1 / len(layer.candidates))] * len(layer.candidates) for layer in space.layers]
    low, high = latency_range_ms(predictor)
    budget = low + 0.6 * (high - low)
    arch, steps = fill_budget(space, predictor, fastest, uniform, budget)
    assert steps and all(s.kind == "upgrade" and s.saved_ms < 0 for s in steps)
    assert low < predictor.latency_ms(arch) <= budget
    # no single upgrade that still fits is left
    lat = predictor.latency_ms(arch)
    for li, layer in enumerate(space.layers):
        ci = layer.candidates.index(arch.choice_map[layer.name])
        assert all(lat + float(per_layer[li][cj] - per_layer[li][ci]) > budget
                   for cj in range(len(layer.candidates)) if per_layer[li][cj] > per_layer[li][ci])
    # a sure distribution is not overruled: every alternative is > 10x less probable
    sure = [[0.0 if c == fastest[layer.name] else -FILL_MAX_LOG_RATIO - 1 for c in layer.candidates]
            for layer in space.layers]
    assert fill_budget(space, predictor, fastest, sure, budget)[1] == []
    # fit_to_budget repairs first, fills only when asked
    assert fit_to_budget(space, predictor, fastest, uniform, budget, fill=False)[1] == []


def test_top_k_is_exact(space):
    torch.manual_seed(1)
    log_probs = [torch.randn(len(layer.candidates)).log_softmax(0).tolist() for layer in space.layers]
    every = sorted(
        (sum(lp[i] for lp, i in zip(log_probs, idx)), idx)
        for idx in itertools.product(*(range(len(layer.candidates)) for layer in space.layers))
    )[::-1]
    top = top_k_choices(space, log_probs, 5)
    assert [score for _, score in top] == pytest.approx([score for score, _ in every[:5]])


# --- full searches --------------------------------------------------------------------------------
def test_search_meets_a_tight_budget(space, predictor, lut_file, tmp_path, capsys, monkeypatch):
    fastest, slowest = latency_range_ms(predictor)
    budget = fastest + 0.15 * (slowest - fastest)
    out = tmp_path / "run"
    argv = ["search", "--strategy", "fbnet", "--space", "tiny", "--lut", str(lut_file), "--latency-budget",
            f"{budget}ms", "--data", "digits", "--epochs", "2", "--warmup-epochs", "0", "--out", str(out),
            "--no-progress", "--max-batches", "3", "--batch-size", "32", "--top-k", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    arch = load_arch(out / "arch.json")
    assert predictor.latency_ms(arch) <= budget and result["meets_budget"]
    assert result["predicted_latency_ms"] == pytest.approx(predictor.latency_ms(arch))
    assert ("repaired" in printed) == result["repaired"]
    log = read_jsonl(out / "log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"weight_loss", "arch_top1", "expected_latency_ms", "temperature", "probs"} <= set(log[0])
    assert log[1]["temperature"] == pytest.approx(5.0 * 0.956)
    for name in ("supernet.pt", "arch_distribution.png", "latency.png"):
        assert (out / name).stat().st_size > 0
    assert 1 <= len(result["candidates"]) <= 2
    assert all(c["predicted_ms"] <= budget for c in result["candidates"])


def test_resume_continues_from_the_checkpoint(space, predictor, digits, tmp_path):
    budget = resolve_budget(parse_budget("50%"), predictor)
    strategy = FBNetStrategy(FBNetConfig(epochs=2, **FAST))
    full = run_search(problem(space, predictor, digits, tmp_path / "full", budget), strategy)
    part = run_search(problem(space, predictor, digits, tmp_path / "part", budget), strategy, stop_after=1)
    assert not part.finished and len(read_jsonl(tmp_path / "part" / "log.jsonl")) == 1
    resumed = run_search(problem(space, predictor, digits, tmp_path / "part", budget, resume=True), strategy)
    assert resumed.finished and resumed.arch == full.arch
    a = torch.load(tmp_path / "full" / "supernet.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "supernet.pt", weights_only=True)
    assert b["epoch"] == 2
    for key in (k for k in a["supernet"] if k.startswith("alphas")):
        assert torch.allclose(a["supernet"][key], b["supernet"][key], atol=1e-6), key
    la, lb = read_jsonl(tmp_path / "full" / "log.jsonl"), read_jsonl(tmp_path / "part" / "log.jsonl")
    assert [r["expected_latency_ms"] for r in la] == pytest.approx([r["expected_latency_ms"] for r in lb])


def test_infeasible_budget_fails_before_any_training(lut_file, predictor, tmp_path, capsys, monkeypatch):
    import hwnas.search.run as search_run

    monkeypatch.setattr(search_run, "load_data", lambda *a, **k: pytest.fail("data loaded for an infeasible budget"))
    out = tmp_path / "run"
    too_fast = predictor.fastest_latency_ms() * 0.5
    argv = ["search", "--space", "tiny", "--lut", str(lut_file), "--latency-budget", f"{too_fast}ms",
            "--data", "digits", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "infeasible" in err and f"{predictor.fastest_latency_ms():.4g} ms" in err
    assert not out.exists()


@pytest.mark.parametrize("argv_tail, message", [
    (["--latency-budget", "soon"], "not a duration"),
    (["--space", "fbnet"], "lacks"),
    (["--lut", "missing.json"], "not found"),
])
def test_bad_inputs_exit_2(lut_file, tmp_path, capsys, argv_tail, message):
    lut = [] if "--lut" in argv_tail else ["--lut", str(lut_file)]
    argv = ["search", "--space", "tiny", *lut, "--data", "digits", "--out", str(tmp_path / "r"), "--no-progress",
            *argv_tail]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_nonempty_run_dir_is_not_overwritten(lut_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["search", "--space", "tiny", "--lut", str(lut_file), "--data", "digits", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_lut_of_another_space_is_a_lut_error(space):
    with pytest.raises(LutError, match="lacks"):
        LatencyPredictor(mac_table(space), get_space("fbnet"))


# --- the strategy seam ---------------------------------------------------------------------------
def test_registry_holds_every_strategy():
    assert {"fbnet", "random", "evolution", "tpe", "nsga2"} <= set(STRATEGIES)


STRATEGY_FLAGS = {"fbnet": ["--top-k", "1", "--warmup-epochs", "0"], "evolution": ["--trials", "2", "--population", "2"],
                  "nsga2": ["--trials", "2", "--population", "2"]}


# darts searches cell spaces, not the layer-wise tiny: its budget is tested on nb201 (test_search_darts.py)
@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"darts"}))
def test_every_strategy_meets_the_budget(name, space, predictor, digits, lut_file, tmp_path):
    """Contract test: each registered strategy, built from the CLI's flags, returns an architecture
    of the space within the budget and writes arch.json and result.json."""
    from hwnas.cli import build_parser

    args = build_parser().parse_args([
        "search", "--strategy", name, "--space", "tiny", "--lut", str(lut_file), "--data", "digits",
        "--out", str(tmp_path / name), "--epochs", "1", "--max-batches", "2", "--batch-size", "32",
        *STRATEGY_FLAGS.get(name, ["--trials", "2"]),
    ])
    budget = resolve_budget(parse_budget("30%"), predictor)
    strategy = STRATEGIES[name].from_args(args)
    p = problem(space, predictor, digits, tmp_path / name, budget)
    evaluator = make_evaluator("scratch", p, epochs=1, batch_size=32, max_batches=2) if strategy.uses_evaluator else None
    result = run_search(p, strategy, evaluator, LoopConfig(trials=getattr(args, "trials", 20)))
    assert result.strategy == name and result.arch.space == "tiny"
    assert predictor.latency_ms(result.arch) <= budget and result.predicted_ms <= budget
    assert load_arch(tmp_path / name / "arch.json") == result.arch
    assert json.loads((tmp_path / name / "result.json").read_text())["meets_budget"]


def test_cli_resume_of_a_finished_search_and_changed_settings(lut_file, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["search", "--space", "tiny", "--lut", str(lut_file), "--data", "digits", "--out", str(out),
            "--no-progress", "--epochs", "1", "--max-batches", "2", "--latency-budget", "50%", "--top-k", "1"]
    assert main(base) == 0
    first = json.loads((out / "result.json").read_text())
    assert main([*base, "--resume"]) == 0  # nothing left to train: the result is re-derived, unchanged
    assert json.loads((out / "result.json").read_text())["arch_hash"] == first["arch_hash"]
    assert len(read_jsonl(out / "log.jsonl")) == 1
    capsys.readouterr()
    assert main([*base[:-4], "--latency-budget", "60%", "--top-k", "1", "--resume"]) == 2
    assert "--latency-budget was " in capsys.readouterr().err


def test_random_strategy_meets_the_budget_and_resumes(space, predictor, digits, tmp_path):
    budget = resolve_budget(parse_budget("40%"), predictor)
    p = problem(space, predictor, digits, tmp_path / "r", budget)
    evaluator = make_evaluator("scratch", p, epochs=1, batch_size=32, max_batches=2)
    part = run_search(p, RandomStrategy(), evaluator, LoopConfig(trials=2), stop_after=1)
    first = [t for t in read_history(tmp_path / "r" / "trials.jsonl") if t.state != "infeasible"]
    assert len(first) == 1 and not part.finished
    result = run_search(problem(space, predictor, digits, tmp_path / "r", budget, resume=True), RandomStrategy(),
                        evaluator, LoopConfig(trials=2))
    evaluated = [t for t in read_history(tmp_path / "r" / "trials.jsonl") if t.state != "infeasible"]
    assert len(evaluated) == 2 and evaluated[0] == first[0]
    assert result.predicted_ms <= budget
    assert result.arch == max(evaluated, key=lambda t: t.top1).arch


def test_search_predicts_the_head_of_the_data_and_refuses_a_table_without_it(lut_file, tmp_path, capsys):
    from test_data import _digit_folder

    folder = _digit_folder(tmp_path / "three", classes=(0, 1, 2), per_class=(8, 4))
    out = tmp_path / "run"
    argv = ["search", "--space", "tiny", "--lut", str(lut_file), "--data", str(folder), "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "head:f16_n3" in err and "--num-classes 3" in err
    assert not out.exists()


class ScoreByMacs(Evaluator):
    """Scores an architecture by a fixed function of it (its MAC-proportional latency), counting calls."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, []

    def score(self, arch, seed):
        self.calls.append(arch.hash)
        return 100.0 * self.predictor.latency_ms(arch)


def test_finalists_are_the_argmax_and_samples_and_the_best_is_returned(space, predictor, digits, tmp_path):
    budget = resolve_budget(parse_budget("50%"), predictor)
    plain = run_search(problem(space, predictor, digits, tmp_path / "a", budget), FBNetStrategy(FBNetConfig(epochs=1, **FAST)))
    scorer = ScoreByMacs(predictor)
    cfg = FBNetConfig(epochs=1, finalists=3, **FAST)
    result = run_search(problem(space, predictor, digits, tmp_path / "b", budget), FBNetStrategy(cfg, evaluator=scorer))
    finalists = result.details["finalists"]
    assert [f["note"] for f in finalists] == ["argmax", "sample", "sample"]
    assert finalists[0]["hash"] == plain.arch.hash  # the same supernet run: the argmax is the plain result
    assert len({f["hash"] for f in finalists}) == 3 and scorer.calls == [f["hash"] for f in finalists]
    assert all(f["predicted_ms"] <= budget for f in finalists)
    assert result.arch.hash == max(finalists, key=lambda f: f["score"])["hash"]
    assert result.predicted_ms <= budget and result.wall_s >= sum(f["wall_s"] for f in finalists)
    assert json.loads((tmp_path / "b" / "result.json").read_text())["arch_hash"] == result.arch.hash

    # resuming the finished search with more finalists trains only the new one
    more = FBNetStrategy(FBNetConfig(epochs=1, finalists=4, **FAST), evaluator=ScoreByMacs(predictor))
    again = run_search(problem(space, predictor, digits, tmp_path / "b", budget, resume=True), more)
    assert [f["hash"] for f in again.details["finalists"][:3]] == [f["hash"] for f in finalists]
    assert more.evaluator.calls == [again.details["finalists"][3]["hash"]]


def test_cli_finalists_are_trained_on_the_weight_split_and_scored(lut_file, tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--lut", str(lut_file), "--data", "digits", "--out", str(out),
                 "--no-progress", "--epochs", "1", "--max-batches", "2", "--latency-budget", "50%", "--top-k", "1",
                 "--finalists", "2", "--finalist-epochs", "1"]) == 0
    stored = json.loads((out / "finalists.json").read_text())
    scores = [t["score"] for t in stored["trials"]]
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores) and stored["finalist_epochs"] == 1
    result = json.loads((out / "result.json").read_text())
    assert result["arch_hash"] == max(stored["trials"], key=lambda t: t["score"])["hash"]
    assert result["meets_budget"]
