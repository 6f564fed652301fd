"""NAS-Bench-201 as a tabular benchmark: look-ups give the published figures, the `nb201` evaluator
scores by the search signal and reports the final accuracy, `--device` budgets with HW-NAS-Bench's
latency, and the strategies are measured on it (BANANAS and local search beat random search).
Every test here needs ../shared/data/nasbench and skips without it."""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pytest
import torch

from hwnas.core.arch import Arch, load_arch
from hwnas.cli import main
from hwnas.search import STRATEGIES, LoopConfig, SearchProblem, read_history, run_search
from hwnas.search.encodings import Encoder, canonical
from hwnas.search.tabular import TabularEvaluator
from hwnas.core.spaces import get_space
from hwnas.core.spaces.nb201 import parse_nb201_string
from hwnas.tabular.latency import DeviceLatency, nb201_params
from hwnas.tabular.nb201 import ENV, BenchmarkDataError, NB201Table

RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
BEST = 6111  # the highest 200-epoch CIFAR-10 test accuracy of NB201, 94.37


@pytest.fixture
def table(shared_data):
    return NB201Table.load(shared_data / "nasbench")


@pytest.fixture
def nasbench_env(shared_data, monkeypatch):
    monkeypatch.setenv(ENV, str(shared_data / "nasbench"))


def arch_of(text: str) -> Arch:
    return Arch.create(get_space("nb201"), parse_nb201_string(text))


def test_a_lookup_gives_the_published_figures(table):
    resnet = arch_of(RESNET)
    assert table.index(resnet) == 11472
    assert table.value(resnet, "c10_test_200ep") == pytest.approx(93.91)
    assert table.arch(11472) == resnet
    assert table.value(table.arch(BEST), "c10_test_200ep") == pytest.approx(94.373333)
    assert table.columns["c10_test_200ep"].max() == pytest.approx(94.373333)


def test_every_architecture_is_in_the_table_once(table):
    archs = table.archs()
    assert len({a.hash for a in archs}) == 15625
    assert [table.index(a) for a in archs[:50]] == [int(i) for i in table.indices[:50]]


def test_a_missing_table_is_one_line_naming_the_fix(tmp_path, capsys):
    with pytest.raises(BenchmarkDataError, match=f"set {ENV}=DIR"):
        NB201Table.load(tmp_path)
    assert main(["search", "--space", "nb201", "--strategy", "random", "--evaluator", "nb201", "--device", "pixel3",
                 "--benchmark-data", str(tmp_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "is missing" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_the_evaluator_scores_by_the_signal_and_reports_the_final_accuracy(table, shared_data):
    evaluator = TabularEvaluator("cifar10", shared_data / "nasbench")
    resnet = arch_of(RESNET)
    assert evaluator.score(resnet, seed=123) == table.value(resnet, "c10valid_valid_12ep")
    record = evaluator.result_details(resnet)["benchmark"]
    assert record["index"] == 11472 and record["arch_str"] == RESNET
    assert record["signal"] == "c10valid_valid_12ep" and record["final_value"] == pytest.approx(93.91)
    c100 = TabularEvaluator("cifar100", shared_data / "nasbench")
    assert c100.score(resnet, 0) == table.value(resnet, "c100_valid_12ep")


def test_device_latency_is_the_published_one_and_its_range_exact(table):
    space = get_space("nb201")
    pixel3 = DeviceLatency(table, "pixel3", space)
    resnet = arch_of(RESNET)
    assert pixel3.latency_ms(resnet) == table.value(resnet, "pixel3_ms")
    assert pixel3.latency_range() == (table.columns["pixel3_ms"].min(), table.columns["pixel3_ms"].max())
    assert pixel3.predict(resnet).latency_ms == pixel3.latency_ms(resnet)


@pytest.mark.parametrize("text", [RESNET, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                  "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                  "nor_conv_1x1~2|"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_counted_parameters_are_those_of_the_built_network(text, num_classes):
    arch = arch_of(text)
    space = get_space("nb201", num_classes=num_classes)
    model = space.build_model(arch.choice_map)
    assert nb201_params(arch.choice_map, num_classes) == sum(p.numel() for p in model.parameters())


def test_path_encoding_counts_live_paths_and_canonical_prunes_dead_edges():
    space = get_space("nb201")
    encoder = Encoder(space)
    assert encoder.kind == "path" and encoder.dim == 4 + 16 + 64
    resnet = arch_of(RESNET)  # live paths: skip (0->3), conv3-skip (0->1->2->3 is conv3, conv3, skip)
    vector = encoder.encode(resnet)
    assert vector.sum() == 2
    assert vector[encoder.features[("skip_connect",)]] == 1
    assert vector[encoder.features[("nor_conv_3x3", "nor_conv_3x3", "skip_connect")]] == 1
    # node 2's inputs are dead when nothing leaves node 2
    dead = arch_of("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    pruned = canonical(dead, space)
    assert pruned.choice_map["edge_2_0"] == pruned.choice_map["edge_2_1"] == "none"
    assert canonical(resnet, space) == resnet
    assert Encoder(get_space("tiny")).kind == "onehot"


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_search_on_the_benchmark_under_a_device_budget(nasbench_env, table, tmp_path, capsys):
    out = tmp_path / "run"
    code, printed, err = run_cli(["search", "--space", "nb201", "--strategy", "local", "--evaluator", "nb201",
                                  "--device", "pixel3", "--latency-budget", "25%", "--trials", "30", "--out", str(out),
                                  "--no-progress"], capsys)
    assert code == 0, err
    doc = json.loads((out / "result.json").read_text())
    arch = load_arch(out / "arch.json")
    bench = doc["benchmark"]
    assert bench["index"] == table.index(arch) and bench["arch_str"] == table.strings[table.row(arch)]
    assert bench["final_value"] == table.value(arch, "c10_test_200ep")
    assert bench["signal_value"] == doc["best_score"] == table.value(arch, "c10valid_valid_12ep")
    low, high = table.columns["pixel3_ms"].min(), table.columns["pixel3_ms"].max()
    assert doc["budget_ms"] == pytest.approx(low + 0.25 * (high - low))
    assert doc["predicted_latency_ms"] == table.value(arch, "pixel3_ms") <= doc["budget_ms"]
    history = read_history(out / "trials.jsonl")
    assert sum(t.state == "complete" for t in history) == 30  # one query, one trial; rejected ones are free
    assert "NAS-Bench-201 #" in printed and "on-device check skipped" in printed


@pytest.mark.parametrize("flags, message", [
    (["--device", "pixel3", "--data", "digits"], "drop --data"),
    ([], "--lut TABLE is required"),
    (["--device", "pixel3", "--resolution", "64"], "drop --resolution"),
    (["--device", "pixel3", "--evaluator", "scratch", "--benchmark-dataset", "cifar10", "--data", "digits"],
     "--benchmark-dataset is not used"),
    (["--device", "pixel3", "--lut", "x.json"], "not both"),
    (["--device", "pixel3", "--benchmark-dataset", "imagenet16-120"], "use --benchmark-dataset cifar10 or cifar100"),
    (["--device", "pixel3", "--benchmark-dataset", "mnist"], "invalid choice: 'mnist'"),
    (["--device", "pixel3", "--task-head", "ssdlite"], "--task-head measures a head on this machine"),
    (["--device", "pixel3", "--params-budget", "50k"], "the smallest network of space 'nb201' has 73,306 parameters"),
])
def test_bad_benchmark_searches_are_refused(nasbench_env, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    evaluator = [] if "--evaluator" in flags else ["--evaluator", "nb201"]
    code, _, err = run_cli(["search", "--space", "nb201", "--strategy", "random", *evaluator, *flags,
                            "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_device_latency_is_refused_for_other_spaces(nasbench_env, tmp_path, capsys):
    code, _, err = run_cli(["search", "--space", "tiny", "--strategy", "random", "--device", "pixel3", "--data",
                            "digits", "--out", str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 2 and "search with --space nb201" in err


def search_results(name: str, table, seeds: int, queries: int = 100, budget=None, device="pixel3") -> list[Arch]:
    """The results of `seeds` searches of `name` (default settings, as the CLI builds it)."""
    space = get_space("nb201")
    latency = DeviceLatency(table, device, space)
    evaluator = TabularEvaluator("cifar10", table.path.parents[1])
    results = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as tmp:
            problem = SearchProblem(space, latency, budget, None, Path(tmp) / "run", seed=seed, progress=False)
            strategy = STRATEGIES[name].from_args(argparse.Namespace())
            results.append(run_search(problem, strategy, evaluator, LoopConfig(trials=queries)).arch)
    return results


def mean_final(name: str, table, seeds: int) -> float:
    return statistics.fmean(table.value(a, "c10_test_200ep") for a in search_results(name, table, seeds))


def test_bananas_and_local_search_beat_random_search(table):
    """At 100 queries over the same 8 seeds, with default settings (benchmarks/nas_bench.py measures
    this over 100 seeds beside the published anchors)."""
    torch.manual_seed(0)
    random_search = mean_final("random", table, 8)
    assert mean_final("local", table, 8) > random_search + 0.2
    assert mean_final("bananas", table, 8) > random_search + 0.2


def test_results_meet_a_device_budget(table):
    latency = DeviceLatency(table, "raspi4", get_space("nb201"))
    budget = latency.quantile_ms(0.10)
    for name in ("local", "bananas", "evolution"):
        for arch in search_results(name, table, 2, queries=30, budget=budget, device="raspi4"):
            assert latency.latency_ms(arch) <= budget


def test_a_batch_of_proposals_works_for_bananas_and_local_search(table, tmp_path):
    space = get_space("nb201")
    evaluator = TabularEvaluator("cifar10", table.path.parents[1])
    for name in ("bananas", "local"):
        problem = SearchProblem(space, DeviceLatency(table, "pixel3", space), None, None, tmp_path / name,
                                progress=False)
        run_search(problem, STRATEGIES[name].from_args(argparse.Namespace()), evaluator,
                   LoopConfig(trials=40, batch=4))
        history = read_history(tmp_path / name / "trials.jsonl")
        assert len(history) == 40 and len({t.arch.hash for t in history}) >= 36
