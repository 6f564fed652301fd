"""The darts strategy on nb201 and on the darts cell space: mixed edges, the additive latency model of a cell space, the
second-order gradient, DARTS-'s auxiliary skip, budgets and repair, resume, the benchmark lookup.

Supernets here are tiny (4 channels, one cell per stage, 2 batches of 16 digits per epoch; darts:
5 cells, digits at 16x16); latency tables are test fixtures (latency proportional to MACs, see lut_fixtures.py)."""

import json
import math
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
from hwnas.search.budget import fill_budget
from hwnas.core.edges import edges
from hwnas.search.darts_supernet import CellSupernet, DartsCellSupernet, MixedEdge
from hwnas.search.darts_train import DartsTraining
from hwnas.search.decision_costs import decision_costs, edge_costs
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
    return CellSupernet(edges(space), 10, channels=(4, 8, 16), cells_per_stage=1)


# --- the supernet -----------------------------------------------------------------------------
def test_a_mixed_edge_is_the_weighted_sum_of_its_ops_plus_the_auxiliary_skip(space):
    edge = edges(space)[0]
    assert edge.ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
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



# --- DARTS-PT: selection by perturbation ------------------------------------------------------
def test_a_projected_edge_mixes_one_hot_and_a_removed_op_weighs_nothing(space):
    net = tiny_net(space)
    with torch.no_grad():
        net.alphas[1].copy_(torch.tensor([0.5, 0.1, -0.2, 0.3, 0.0]))
    probs = net.probabilities()
    net.projected = {0: 3}
    net.removed = (1, 0)
    weights = net.mixing_weights()
    assert weights[0].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert weights[1][0] == 0 and torch.allclose(weights[1][1:], probs[1][1:])  # the others keep theirs
    assert all(torch.equal(w, p) for w, p in zip(weights[2:], probs[2:]))
    assert all(torch.equal(a, b) for a, b in zip(net.probabilities(), probs))  # alphas untouched


def test_pt_projects_onto_the_op_whose_removal_costs_most_accuracy_then_the_most_loss():
    from hwnas.search.darts_pt import select

    rows = [{"acc_without": 30.0, "loss_without": 2.0}, {"acc_without": 25.0, "loss_without": 2.1},
            {"acc_without": 25.0, "loss_without": 2.3}, {"acc_without": 31.0, "loss_without": 1.9}]
    assert select(rows) == 2


def test_a_darts_pt_search_selects_each_edge_by_its_measured_check(space, predictor, digits, tmp_path):
    from hwnas.search.darts_pt import select

    result = run_search(problem(space, predictor, digits, tmp_path / "pt"),
                        DARTSStrategy(DARTSConfig(variant="darts-pt", epochs=2, pt_batches=2, pt_tune_steps=1, **TINY)))
    doc = json.loads((tmp_path / "pt" / "result.json").read_text())
    projection = doc["projection"]
    assert sorted(e["edge"] for e in projection["edges"]) == sorted(space.decision_names)
    for edge in projection["edges"]:
        assert [r["op"] for r in edge["ops"]] == list(space.decision(edge["edge"]).choices)
        assert edge["chosen"] == edge["ops"][select(edge["ops"])]["op"]
        assert result.arch.choice_map[edge["edge"]] == edge["chosen"]  # no budget: the projection itself
    assert doc["cpu_s"] > projection["cpu_s"] > 0
    assert set(doc["alpha_argmax_arch"]["choices"]) == set(space.decision_names)


def test_a_darts_pt_search_killed_between_edges_resumes_to_the_same_cell(space, predictor, digits, tmp_path,
                                                                        monkeypatch):
    from hwnas.search import darts_pt

    strategy = DARTSStrategy(DARTSConfig(variant="darts-pt", epochs=1, pt_batches=2, pt_tune_steps=2, **TINY))
    full = run_search(problem(space, predictor, digits, tmp_path / "full"), strategy)
    tune, calls = darts_pt.Projection.tune, []

    def dies_at_the_third_edge(self, index):
        calls.append(index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        tune(self, index)

    monkeypatch.setattr(darts_pt.Projection, "tune", dies_at_the_third_edge)
    with pytest.raises(KeyboardInterrupt):
        run_search(problem(space, predictor, digits, tmp_path / "part"), strategy)
    monkeypatch.setattr(darts_pt.Projection, "tune", tune)
    resumed = run_search(problem(space, predictor, digits, tmp_path / "part", resume=True), strategy)
    assert resumed.arch == full.arch
    assert resumed.details["projection"]["edges"] == full.details["projection"]["edges"]


def test_darts_pt_is_refused_on_the_darts_space_which_also_selects_inputs(darts_space, darts_predictor, digits,
                                                                          tmp_path):
    from hwnas.errors import HwnasError

    with pytest.raises(HwnasError, match=r"darts-pt selects one op per edge \(nb201\)"):
        run_search(problem(darts_space, darts_predictor, digits, tmp_path / "r"),
                   DARTSStrategy(DARTSConfig(variant="darts-pt", **TINY)))
    assert not (tmp_path / "r").exists()

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


# --- the darts cell space ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def darts_space():
    return get_space("darts_tiny")


@pytest.fixture(scope="module")
def darts_predictor(darts_space):
    return LatencyPredictor(mac_table(darts_space), darts_space)


@pytest.fixture(scope="module")
def small_digits():
    return load_data("digits", resolution=16, seed=0)


def test_the_darts_supernet_is_dartss_search_network_with_separate_normal_and_reduction_alphas(darts_space):
    torch.manual_seed(0)
    net = DartsCellSupernet(darts_space, channels=4, cells=5, resolution=16)
    assert [cell.cell_type for cell in net.network.cells] == ["normal", "reduce", "normal", "reduce", "normal"]
    assert len(net.arch_parameters()) == 28 and all(len(a) == 8 for a in net.arch_parameters())
    assert [e.cell for e in net.edges] == ["normal"] * 14 + ["reduce"] * 14
    reduce_cell = net.network.cells[1]  # edges from its inputs run at stride 2: their skip is a FactorizedReduce
    assert [s for e, s in zip(reduce_cell.edges, reduce_cell.strides) if e.source < 2] == [2] * 8
    loss = F.cross_entropy(net(torch.randn(4, 3, 16, 16), aux_skip=0.5), torch.arange(4))
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    with torch.no_grad():  # derivation is DARTS's top-2 rule: make normal node 5 read states 1 and 4
        for a, e in zip(net.alphas, net.edges):
            if e.cell == "normal" and e.to == 5:
                a.copy_(torch.full((8,), -5.0))
                if e.source in (1, 4):
                    a[e.ops.index("sep_conv_3x3" if e.source == 1 else "dil_conv_5x5")] = 6.0
                if e.source == 0:
                    a[0] = 9.0  # `none` is the strongest op of any edge, but never chosen
    choices = net.argmax_choices()
    assert Arch.create(darts_space, choices).choice_map == choices
    assert (choices["normal.n5.inputs"], choices["normal.n5.op0"], choices["normal.n5.op1"]) == (
        "1_4", "sep_conv_3x3", "dil_conv_5x5")
    log_probs = net.decision_log_probs(choices)
    assert len(log_probs) == len(darts_space.decision_names)
    for name, lp in zip(darts_space.decision_names, log_probs):
        assert len(lp) == len(darts_space.decision(name).choices)
        assert sum(math.exp(v) for v in lp) == pytest.approx(1.0, rel=1e-4)


def test_darts_latency_sums_over_edges_and_its_expectation_weighs_each_edge_by_its_keep_chance(
        darts_space, darts_predictor):
    costs = edge_costs(darts_predictor)
    rng = random.Random(5)
    for _ in range(10):
        choices = darts_space.sample(rng)
        assert costs.latency_ms(choices) == pytest.approx(darts_predictor.latency_ms(Arch.create(darts_space, choices)),
                                                          rel=1e-5)
    assert costs.keep == tuple(2.0 / e.to for e in costs.edges)
    sep = edges(darts_space)[0].ops.index("sep_conv_3x3")
    one_hot = [F.one_hot(torch.tensor(sep), 8).float() for _ in costs.edges]
    expected = costs.fixed + sum(w * float(c[sep]) for w, c in zip(costs.keep, costs.costs))
    assert float(costs.expected(one_hot)) == pytest.approx(expected, rel=1e-5)
    alphas = [torch.zeros(8, requires_grad=True) for _ in costs.edges]
    costs.expected([a.softmax(0) for a in alphas]).backward()
    assert all(a.grad[sep] > 0 > a.grad[0] for a in alphas)  # a conv costs, `none` does not


def test_repair_and_fill_work_on_the_darts_space(darts_space, darts_predictor):
    with pytest.raises(LutError):  # an op's stride depends on its node's inputs: not a sum over decisions
        decision_costs(darts_predictor)
    slow = {n: darts_space.decision(n).choices[0] if n.endswith("inputs") else "sep_conv_5x5"
            for n in darts_space.decision_names}
    fastest, slowest = darts_predictor.latency_range()
    budget = fastest + 0.3 * (darts_predictor.latency_ms(Arch.create(darts_space, slow)) - fastest)
    uniform = [[0.0] * len(darts_space.decision(n).choices) for n in darts_space.decision_names]
    arch, steps = repair_to_budget(darts_space, darts_predictor, slow, uniform, budget)
    assert steps and darts_predictor.latency_ms(arch) <= budget
    assert all(step.kind == "downgrade" and step.saved_ms > 0 for step in steps)
    empty = {**slow, **{n: "none" for n in darts_space.decision_names if not n.endswith("inputs")}}
    filled, steps = fill_budget(darts_space, darts_predictor, empty, uniform, budget)
    assert steps and darts_predictor.latency_ms(Arch.create(darts_space, empty)) < darts_predictor.latency_ms(filled)
    assert darts_predictor.latency_ms(filled) <= budget


def test_a_darts_search_meets_its_budget_and_resumes_to_the_same_result(darts_space, darts_predictor, small_digits,
                                                                       tmp_path):
    fastest, slowest = darts_predictor.latency_range()
    budget = fastest + 0.4 * (slowest - fastest)
    strategy = DARTSStrategy(DARTSConfig(epochs=2, channels=4, cells=1, batch_size=8, max_batches=1))
    full = run_search(problem(darts_space, darts_predictor, small_digits, tmp_path / "full", budget=budget), strategy)
    assert full.finished and full.predicted_ms <= budget
    doc = json.loads((tmp_path / "full" / "result.json").read_text())
    assert doc["supernet"]["edges"] == 28 and doc["derived_edges"] == 16
    assert set(doc["probabilities"]) == {e.name for e in edges(darts_space)}
    assert (tmp_path / "full" / "alphas.png").stat().st_size > 0
    part = run_search(problem(darts_space, darts_predictor, small_digits, tmp_path / "part", budget=budget),
                      strategy, stop_after=1)
    assert not part.finished
    resumed = run_search(problem(darts_space, darts_predictor, small_digits, tmp_path / "part", budget=budget,
                                 resume=True), strategy)
    assert resumed.arch == full.arch and resumed.details["probabilities"] == full.details["probabilities"]
