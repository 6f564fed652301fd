"""The darts strategy on nb201: mixed edges, the additive latency model of a cell space, the
second-order gradient, DARTS-'s auxiliary skip, budgets and repair, resume, the benchmark lookup.

Supernets here are tiny (4 channels, one cell per stage, 2 batches of 16 digits per epoch); latency
tables are test fixtures (latency proportional to MACs, see lut_fixtures.py)."""

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hwnas.cli import main
from hwnas.core.arch import Arch
from hwnas.core.cells import edge_op
from hwnas.core.spaces import get_space
from hwnas.errors import LutError
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.search import DARTSConfig, DARTSStrategy, SearchProblem, repair_to_budget, run_search
from hwnas.search.darts_supernet import CellSupernet, MixedEdge, cell_edges
from hwnas.search.darts_train import DartsTraining
from hwnas.search.decision_costs import decision_costs
from hwnas.train.data import load_data
from lut_fixtures import mac_table

TINY = dict(channels=4, cells=1, batch_size=16, max_batches=2)


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


@pytest.fixture(scope="module")
def predictor(space):
    return LatencyPredictor(mac_table(space), space)


@pytest.fixture(scope="module")
def lut_file(space, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "nb201_lut.json"
    mac_table(space).save(path)
    return path


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=32, seed=0)


def problem(space, predictor, data, run_dir, budget=None, resume=False, seed=0):
    return SearchProblem(space, predictor, budget, data, Path(run_dir), seed=seed, resume=resume, progress=False)


def tiny_net(space, seed=0):
    torch.manual_seed(seed)
    return CellSupernet(cell_edges(space), 10, channels=(4, 8, 16), cells_per_stage=1)


# --- the supernet -----------------------------------------------------------------------------
def test_a_mixed_edge_is_the_weighted_sum_of_its_ops_plus_the_auxiliary_skip(space):
    edge = cell_edges(space)[0]
    assert edge.candidates == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    mixed = MixedEdge(edge, edge_op, 4).eval()
    x = torch.randn(2, 4, 8, 8)
    w = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15])
    expected = sum(wi * op(x) for wi, op in zip(w, mixed.ops))
    assert torch.allclose(mixed(x, w), expected)
    assert torch.allclose(mixed(x, w, aux_skip=0.5), expected + 0.5 * x)
    one_hot = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    assert torch.allclose(mixed(x, one_hot), mixed.ops[3](x))


def test_every_alpha_and_weight_gets_a_gradient(space):
    net = tiny_net(space)
    assert net.edge_names == tuple(name for name, _, _ in space.cell_edges)
    loss = F.cross_entropy(net(torch.randn(4, 3, 16, 16)), torch.arange(4))
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    assert all(p.grad is not None for p in net.weight_parameters())
    assert set(net.argmax_choices()) == set(space.decision_names)


def test_a_non_cell_space_is_refused(tmp_path, capsys):
    tiny_lut = tmp_path / "tiny_lut.json"
    mac_table(get_space("tiny")).save(tiny_lut)
    code = main(["search", "--strategy", "darts", "--space", "tiny", "--lut", str(tiny_lut), "--data", "digits",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and "not a cell space" in capsys.readouterr().err


# --- latency ----------------------------------------------------------------------------------
def test_cell_latency_is_a_sum_over_edges_and_its_expectation_is_differentiable(space, predictor):
    costs = decision_costs(predictor)
    assert costs.names == space.decision_names
    rng = random.Random(3)
    for _ in range(20):
        choices = space.sample(rng)
        arch = Arch.create(space, choices)
        one_hot = [F.one_hot(torch.tensor(cands.index(choices[n])), len(cands)).float()
                   for n, cands in zip(costs.names, costs.candidates)]
        assert float(costs.expected(one_hot)) == pytest.approx(predictor.latency_ms(arch), rel=1e-5)
    alphas = [torch.zeros(5, requires_grad=True) for _ in costs.names]
    costs.expected([a.softmax(0) for a in alphas]).backward()
    for alpha, cost in zip(alphas, costs.costs):  # more weight on a slower op raises the expected latency
        assert alpha.grad[int(cost.argmax())] > 0 > alpha.grad[int(cost.argmin())]


def test_a_whole_network_latency_model_is_refused_as_not_additive(shared_data):
    from hwnas.tabular.latency import DeviceLatency
    from hwnas.tabular.nb201 import NB201Table

    space = get_space("nb201")
    with pytest.raises(LutError, match="not a sum over its decisions"):
        decision_costs(DeviceLatency(NB201Table.load(shared_data / "nasbench"), "raspi4", space))


def test_repair_works_on_cell_edges(space, predictor):
    slowest = {n: "nor_conv_3x3" for n in space.decision_names}
    budget = predictor.latency_ms(Arch.create(space, slowest)) * 0.5
    uniform = [[0.0] * 5 for _ in space.decision_names]
    arch, steps = repair_to_budget(space, predictor, slowest, uniform, budget)
    assert steps and predictor.latency_ms(arch) <= budget
    assert all(step.kind == "downgrade" and step.saved_ms > 0 for step in steps)


# --- the training -----------------------------------------------------------------------------
def test_second_order_at_zero_step_is_the_first_order_gradient_and_restores_the_weights(space, predictor, digits,
                                                                                       tmp_path):
    training = DartsTraining(problem(space, predictor, digits, tmp_path / "r"), DARTSConfig(order=2, **TINY), {})
    (xw, yw), (xa, ya) = [next(iter(torch.utils.data.DataLoader(s, batch_size=8))) for s in
                          (training.w_split, training.a_split)]
    first = torch.autograd.grad(training.arch_loss(xa, ya, 0.0)[0], training.alphas)
    before = {k: v.clone() for k, v in training.net.state_dict().items()}  # BN statistics included
    second, *_ = training.unrolled_grads(xw, yw, xa, ya, 0.0, 0.0)
    assert all(torch.allclose(f, s, atol=1e-6) for f, s in zip(first, second))
    after = training.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    second, *_ = training.unrolled_grads(xw, yw, xa, ya, 0.05, 0.0)  # a real step changes it
    assert any(not torch.allclose(f, s, atol=1e-6) for f, s in zip(first, second))


def test_the_auxiliary_skip_decays_linearly_to_zero_in_darts_minus_only(space, predictor, digits, tmp_path):
    minus = DartsTraining(problem(space, predictor, digits, tmp_path / "m"),
                          DARTSConfig(variant="darts-minus", aux_skip=0.8, epochs=2, **TINY), {})
    total = minus.total_steps
    assert total == 4 and minus.aux_skip(0) == pytest.approx(0.8)
    assert minus.aux_skip(total // 2) == pytest.approx(0.4) and minus.aux_skip(total) == 0.0
    plain = DartsTraining(problem(space, predictor, digits, tmp_path / "d"), DARTSConfig(epochs=2, **TINY), {})
    assert plain.aux_skip(0) == 0.0


@pytest.mark.parametrize("variant, order", [("darts", 1), ("darts-minus", 2)])
def test_resume_after_an_interruption_gives_the_same_result(space, predictor, digits, tmp_path, variant, order):
    strategy = DARTSStrategy(DARTSConfig(variant=variant, order=order, epochs=2, **TINY))
    full = run_search(problem(space, predictor, digits, tmp_path / "full"), strategy)
    part = run_search(problem(space, predictor, digits, tmp_path / "part"), strategy, stop_after=1)
    assert not part.finished and part.details["epochs_done"] == 1
    resumed = run_search(problem(space, predictor, digits, tmp_path / "part", resume=True), strategy)
    assert resumed.finished and resumed.arch == full.arch
    assert resumed.details["probabilities"] == full.details["probabilities"]
    log_full = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_resumed = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["probs"] for r in log_full] == [r["probs"] for r in log_resumed]


def test_a_search_reports_its_cell_the_benchmark_and_the_alpha_plot(space, predictor, digits, tmp_path,
                                                                   shared_data, monkeypatch):
    from hwnas.tabular.nb201 import ENV, SIGNALS, NB201Table

    monkeypatch.setenv(ENV, str(shared_data / "nasbench"))
    result = run_search(problem(space, predictor, digits, tmp_path / "r"),
                        DARTSStrategy(DARTSConfig(epochs=2, **TINY)))
    doc = json.loads((tmp_path / "r" / "result.json").read_text())
    table = NB201Table.load(shared_data / "nasbench")
    assert doc["benchmark"] == table.record(result.arch, SIGNALS["cifar10"])  # as the nb201 evaluator reports it
    assert doc["strategy"] == "darts" and doc["epochs_done"] == 2 and doc["supernet"]["channels"] == [4, 8, 16]
    assert set(doc["probabilities"]) == set(space.decision_names)
    assert all(abs(sum(p.values()) - 1) < 1e-3 for p in doc["probabilities"].values())
    assert doc["parameter_free_edges"] == sum(op in ("none", "skip_connect", "avg_pool_3x3")
                                              for op in result.arch.choice_map.values())
    assert (tmp_path / "r" / "alphas.png").stat().st_size > 0 and (tmp_path / "r" / "latency.png").is_file()
    assert result.arch.choice_map == doc["argmax_arch"]["choices"]  # no budget: the argmax itself


def test_a_latency_budget_is_met(space, predictor, digits, tmp_path):
    budget = 0.4 * decision_costs(predictor).expected([torch.full((5,), 0.2)] * 6).item()
    result = run_search(problem(space, predictor, digits, tmp_path / "b", budget=budget),
                        DARTSStrategy(DARTSConfig(epochs=2, arch_lr=0.05, **TINY)))
    assert result.predicted_ms <= budget
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["expected_latency_ms"] < log[0]["expected_latency_ms"]  # the hinge pushes it down
    if result.repaired:
        assert result.arch != Arch.create(space, result.details["argmax_arch"]["choices"])


def test_cli_search_and_flags_of_other_strategies(lut_file, tmp_path, capsys):
    out = tmp_path / "cli"
    base = ["search", "--strategy", "darts", "--space", "nb201", "--lut", str(lut_file), "--data", "digits",
            "--epochs", "1", "--max-batches", "2", "--batch-size", "16", "--darts-channels", "4",
            "--darts-variant", "darts-minus", "--out", str(out), "--no-progress"]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "parameter-free" in text and (out / "arch.json").is_file()
    assert main(base[:-3] + ["--trials", "3", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "--trials is not used by --strategy darts" in capsys.readouterr().err


def test_a_cell_measured_over_the_budget_on_the_device_is_repaired(space, predictor):
    """The on-device check repairs a cell space's result too (edges swapped by the additive costs);
    the measurement here stands in for the device: 1.25x the prediction."""
    from hwnas.latency_tables.validation import EndToEnd
    from hwnas.search.verify import verify_on_device

    arch = Arch.create(space, {n: "nor_conv_3x3" for n in space.decision_names})
    budget = predictor.latency_ms(arch)

    def measure(a):
        ms = predictor.latency_ms(a) * 1.25
        return EndToEnd(a, ms, ms, 0.01, 1.0)

    check = verify_on_device(arch, predictor, budget, measure)
    assert check.repaired and check.meets_budget and check.arch != arch
    assert check.attempts[-1]["repair_steps"] and check.attempts[-1]["measured_ms"] <= budget
