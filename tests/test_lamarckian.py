"""Network morphisms and the Lamarckian strategies (nash, lemonade): every exact morphism preserves
the network's function on every space, approximate ones say so, a space's missing morphisms are not
offered, and a search trains children from their parents' weights, records their lineage and
resumes to the same result."""

import json
import random

import pytest
import torch

from hwnas.cli import main
from hwnas.core.arch import Arch
from hwnas.core.morphisms import (EXACT_KINDS, apply_morphisms, child_state, has_morphisms, inherit_weights,
                                  morphisms, small_start)
from hwnas.core.spaces import get_space
from hwnas.core.weights import load_weights
from hwnas.search import LoopConfig, read_history, run_search
from hwnas.search.evaluators import ScratchEvaluator, holdout_data
from hwnas.search.lamarckian import LemonadeStrategy, NashStrategy, kde_density
from hwnas.train.loop import TrainConfig
from search_contract_setup import make_problem, memory_table, tiny_setup

SPACES = ("tiny", "fbnet", "mnasnet", "mobilenetv3", "proxylessnas")


def _trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A built network with non-trivial BN statistics and affine terms, in eval mode, in float64 (so that
    the comparison is of the functions, not of float32 rounding)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(m.num_features, generator=g))
    return model.double().eval()


def _archs(space, count=1):
    rng = random.Random(3)
    return [small_start(space)] + [Arch.create(space, space.sample(rng)) for _ in range(count)]


@pytest.mark.parametrize("name", SPACES)
def test_every_exact_morphism_preserves_the_function(name):
    space = get_space(name, resolution=32, num_classes=10)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kinds = set()
    for i, arch in enumerate(_archs(space)):
        torch.manual_seed(i)
        parent = _trained_like(space.build_model(arch.choice_map), i)
        with torch.no_grad():
            expected = parent(x)
        moves = morphisms(space, arch, exact_only=False)
        one_each = list({m.kind: m for m in moves}.values())
        # the small start: every exact morphism at every position; a random network: one of each kind
        for move in ([m for m in moves if m.exact] if i == 0 else []) + one_each:
            child_arch = move.apply(space, arch)
            child = space.build_model(child_arch.choice_map).double()
            report = inherit_weights(space, arch, parent, child_arch, child, seed=1)
            assert report.exact == move.exact, (move.text, report.notes)
            with torch.no_grad():
                error = (child.eval()(x) - expected).abs().max().item()
            if move.exact:
                kinds.add(move.kind)
                assert error <= 1e-5, f"{name}: {move.text} changed the output by {error:.3g}"
    # the exact kinds each space can express, all checked above
    assert kinds == {"tiny": {"deepen", "expand_up", "kernel_up"}, "mnasnet": set(EXACT_KINDS)}.get(
        name, {"deepen", "expand_up", "kernel_up"})


@pytest.mark.parametrize("name", SPACES)
def test_several_exact_morphisms_at_once_preserve_the_function(name):
    space = get_space(name, resolution=32, num_classes=10)
    arch = small_start(space)
    parent = _trained_like(space.build_model(arch.choice_map), 0)
    child_arch, moves = apply_morphisms(space, arch, random.Random(1), 6)
    assert len(moves) == 6 and child_arch != arch
    state, report = child_state(space, arch, parent.state_dict(), child_arch, seed=2)
    child = space.build_model(child_arch.choice_map).double()
    child.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert report.exact and torch.allclose(child.eval()(x), parent(x), atol=1e-5)


def test_morphisms_a_space_cannot_express_are_not_offered():
    nb201 = get_space("nb201")
    assert not has_morphisms(nb201) and not morphisms(nb201, Arch.create(nb201, nb201.sample(random.Random(0))))
    fbnet = get_space("fbnet", resolution=32)
    grouped = Arch.create(fbnet, {**small_start(fbnet).choice_map, "layer1": "k3_e1_g2"})
    moves = {m.after for m in morphisms(fbnet, grouped, exact_only=False) if m.decision == "layer1"}
    assert moves == {"k5_e1_g2"}  # a grouped block changes its kernel only
    mnas = get_space("mnasnet", resolution=32)
    noskip = Arch.create(mnas, {**small_start(mnas).choice_map, "s2.skip": "none", "s2.depth": "3"})
    decisions = {m.decision for m in morphisms(mnas, noskip, exact_only=False)}
    assert "s2.depth" in decisions and not any(m.decision == "s2.depth" and m.kind == "deepen"
                                              for m in morphisms(mnas, noskip))
    assert not any(d.endswith((".se", ".skip")) for d in decisions)  # an SE or residual change is never offered


def test_a_density_is_highest_where_the_points_crowd():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 3.0]]).numpy()
    density = kde_density(points, points)
    assert density[:3].min() > density[3]


@pytest.fixture(scope="module")
def tiny():
    return tiny_setup()


def _search(strategy, tiny, run_dir, stop_after=None, resume=False, objectives=("acc",)):
    space, predictor, data = tiny
    problem = make_problem("nash", space, predictor, data, run_dir, resume=resume, objectives=objectives)
    evaluator = ScratchEvaluator(holdout_data(data, 0.2, 0), TrainConfig(epochs=1, batch_size=32, max_batches=2))
    return run_search(problem, strategy, evaluator, LoopConfig(trials=4), stop_after=stop_after)


def test_nash_trains_children_from_their_parents_weights_and_resumes_alike(tiny, tmp_path):
    space, _, data = tiny
    result = _search(NashStrategy(children=2, morphisms=1), tiny, tmp_path / "full")
    history = read_history(tmp_path / "full" / "trials.jsonl")
    start, *children = [t for t in history if t.state != "infeasible"]
    assert start.arch == small_start(space) and start.lineage["parent"] is None
    assert len(children) == 3 and result.details["trials"] == 4
    for child in children:
        lineage = child.lineage
        parent = next(t for t in history if t.number == lineage["parent"])
        assert parent.state == "complete" and lineage["parent_hash"] == parent.arch.hash
        assert len(lineage["morphisms"]) == 1 and lineage["exact"]
        weights = load_weights(tmp_path / "full" / lineage["parent_weights"])
        assert weights["arch"] == parent.arch and (tmp_path / "full" / lineage["weights"]).is_file()
        # the child starts as its parent's function: the inherited weights reproduce the parent's logits
        state, report = child_state(space, parent.arch, weights["state_dict"], child.arch, child.seed)
        nets = [space.build_model(a.choice_map) for a in (parent.arch, child.arch)]
        nets[0].load_state_dict(weights["state_dict"])
        nets[1].load_state_dict(state)
        x = torch.stack([data.val[i][0] for i in range(4)])
        with torch.no_grad():
            assert report.exact and torch.allclose(nets[1].eval()(x), nets[0].eval()(x), atol=1e-5)
    interrupted = _search(NashStrategy(children=2, morphisms=1), tiny, tmp_path / "cut", stop_after=2)
    assert not interrupted.finished
    resumed = _search(NashStrategy(children=2, morphisms=1), tiny, tmp_path / "cut", resume=True)
    key = lambda t: (t.number, t.arch.hash, t.state, t.metrics, t.lineage)  # noqa: E731
    assert [key(t) for t in read_history(tmp_path / "cut" / "trials.jsonl")] == [key(t) for t in history]
    assert resumed.arch == result.arch


def test_lemonade_trains_only_the_children_it_accepts_and_writes_its_front(tiny, tmp_path):
    result = _search(LemonadeStrategy(init=2, children=10, accept=2), tiny, tmp_path / "run",
                     objectives=("acc", "latency"))
    history = read_history(tmp_path / "run" / "trials.jsonl")
    assert [t.lineage["parent"] is None for t in history[:2]] == [True, True]
    assert all(t.lineage["parent"] is not None for t in history[2:]) and result.details["trials"] == 4
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())["front"]
    assert front and (tmp_path / "run" / "pareto.png").stat().st_size > 0


def test_a_lamarckian_strategy_needs_an_evaluator_that_trains(tiny, tmp_path, capsys):
    lut = tmp_path / "lut.json"
    memory_table(tiny[0]).save(lut)
    assert main(["search", "--strategy", "nash", "--evaluator", "shared", "--space", "tiny", "--lut", str(lut),
                 "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    assert "use --evaluator scratch" in capsys.readouterr().err
    assert main(["search", "--strategy", "nash", "--space", "nb201", "--device", "raspi4", "--evaluator", "nb201",
                 "--out", str(tmp_path / "n"), "--no-progress", "--trials", "2"]) == 2


def test_a_nash_climb_that_reached_the_budget_starts_again_from_scratch(tmp_path):
    from hwnas.search.trials import Trial

    space = get_space("tiny")
    strategy = NashStrategy(children=2, morphisms=1)
    strategy.start(space, 0, tmp_path, ("acc",))
    start = small_start(space)
    strategy.feasible = lambda arch: arch == start  # no growth of the start is within the budget
    assert strategy.ask() == start and strategy.lineage(start).parent is None
    strategy.tell(Trial(0, start, "complete", 1.0, 1, 1, 0, {"top1": 50.0}, 50.0, lineage={"parent": None}))
    again = strategy.ask()
    assert strategy.lineage(again).parent is None and strategy.current is None


@pytest.mark.parametrize("name", ["fbnet", "mnasnet", "mobilenetv3", "proxylessnas"])
def test_nash_and_lemonade_search_every_timm_space_within_a_budget(name, tmp_path):
    """The strategies' logic on each space (a synthetic score: the training is tested on tiny above)."""
    from hwnas.latency_tables.predictor import LatencyPredictor
    from hwnas.search import SearchProblem
    from hwnas.search.budget import latency_range_ms
    from hwnas.search.evaluators import SyntheticEvaluator
    from lut_fixtures import mac_table

    space = get_space(name, resolution=32, num_classes=10)
    predictor = LatencyPredictor(mac_table(space), space)
    low, high = latency_range_ms(predictor)
    for strategy in (NashStrategy(children=2, morphisms=2), LemonadeStrategy(init=2, children=10, accept=2)):
        problem = SearchProblem(space, predictor, low + 0.3 * (high - low), None, tmp_path / strategy.name,
                                progress=False, objectives=("acc", "latency"))
        result = run_search(problem, strategy, SyntheticEvaluator(), LoopConfig(trials=6))
        history = read_history(tmp_path / strategy.name / "trials.jsonl")
        grown = [t for t in history if t.lineage.get("parent") is not None]
        assert grown and all(t.lineage["morphisms"] for t in grown)
        assert result.predicted_ms <= problem.budget_ms and predictor.latency_ms(result.arch) <= problem.budget_ms
