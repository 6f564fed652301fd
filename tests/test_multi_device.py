"""One search under several devices' budgets (`--lut NAME=TABLE --latency-budget NAME=BUDGET`,
each repeatable): every strategy meets every device's budget, the result reports each device's
predicted latency, and what cannot work is refused before any work."""

import json
import random
from pathlib import Path

import pytest
import torch

from hwnas.cli import main
from hwnas.core.arch import Arch
from hwnas.core.spaces import get_space
from hwnas.latency_tables import Measurement, OpKey
from hwnas.latency_tables.multi_device import Device, MultiDevicePredictor
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.search import LoopConfig, SearchProblem, SyntheticEvaluator, run_search
from hwnas.search.budget import BudgetError, fill_budget, latency_range_ms, repair_to_budget
from hwnas.search.devices import build_model, closest_to_budgets, parse_devices
from lut_fixtures import activation_table, mac_table
from search_contract_setup import NAMES, SUPERNET, TRIALS, make_strategy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def space():
    return get_space("tiny", num_classes=10)


@pytest.fixture(scope="module")
def tables(space):
    """Two devices that rank architectures differently: compute-bound (MACs) and memory-bound
    (activation elements)."""
    return {"cpu": mac_table(space), "npu": activation_table(space)}


def budget_at(predictor, share: float) -> float:
    low, high = latency_range_ms(predictor)
    return low + share * (high - low)


@pytest.fixture(scope="module")
def model(space, tables):
    predictors = {name: LatencyPredictor(t, space) for name, t in tables.items()}
    devices = [Device(name, p, budget_at(p, 0.3), f"{name}.json") for name, p in predictors.items()]
    return MultiDevicePredictor(devices)


def own_latencies(model, arch):
    return {d.name: d.predictor.latency_ms(arch) for d in model.devices}


def test_the_model_latency_is_within_the_first_budget_exactly_when_every_device_is_within_its_own(space, model):
    rng = random.Random(1)
    for _ in range(300):
        arch = Arch.create(space, space.sample(rng))
        within_all = all(d.predictor.latency_ms(arch) <= d.budget_ms for d in model.devices)
        assert (model.latency_ms(arch) <= model.budget_ms) == within_all
        ratios = [d.predictor.latency_ms(arch) / d.budget_ms for d in model.devices]
        assert model.latency_ms(arch) == pytest.approx(model.budget_ms * max(ratios))


def test_the_expected_latency_is_the_binding_devices_and_differentiable(space, model):
    logits = [torch.zeros(len(layer.candidates), requires_grad=True) for layer in space.layers]
    expected = model.expected_latency([torch.softmax(x, 0) for x in logits])
    each = [model.budget_ms / d.budget_ms * d.predictor.expected_latency([torch.softmax(x, 0) for x in logits])
            for d in model.devices]
    assert float(expected) == pytest.approx(max(float(e) for e in each))
    expected.backward()
    assert any(x.grad.abs().sum() > 0 for x in logits)


def test_repair_brings_the_slowest_architecture_within_every_budget(space, model):
    slowest = {layer.name: "k5_e3" for layer in space.layers}
    arch = Arch.create(space, slowest)
    assert any(lat > d.budget_ms for d, lat in zip(model.devices, own_latencies(model, arch).values()))
    flat = [[0.0] * len(layer.candidates) for layer in space.layers]
    repaired, steps = repair_to_budget(space, model, slowest, flat, model.budget_ms)
    assert steps and all(s.kind == "downgrade" for s in steps)
    for d in model.devices:
        assert d.predictor.latency_ms(repaired) <= d.budget_ms * (1 + 1e-9)


def test_fill_never_takes_a_device_over_its_budget(space, model):
    fastest = {layer.name: min(layer.candidates, key=lambda c: model.latency_ms(Arch.create(
        space, {**{l.name: "k3_e1" for l in space.layers}, layer.name: c}))) for layer in space.layers}
    flat = [[0.0] * len(layer.candidates) for layer in space.layers]
    filled, steps = fill_budget(space, model, fastest, flat, model.budget_ms)
    assert steps
    for d in model.devices:
        assert d.predictor.latency_ms(filled) <= d.budget_ms * (1 + 1e-9)


def two_devices(space, share: float = 0.3) -> MultiDevicePredictor:
    predictors = {"cpu": LatencyPredictor(mac_table(space), space), "npu": LatencyPredictor(activation_table(space), space)}
    return MultiDevicePredictor([Device(n, p, budget_at(p, share), f"{n}.json") for n, p in predictors.items()])


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_meets_every_devices_budget_and_reports_each(name, space, model, tmp_path):
    from hwnas.train.data import load_data

    if name == "darts":  # a cell-space strategy: the contract runs it on nb201
        space = get_space("nb201", num_classes=10)
        model = two_devices(space)
    data = load_data("digits", resolution=32, seed=0)
    problem = SearchProblem(space, model, model.budget_ms, data, tmp_path / "run", progress=False)
    evaluator = None if name in SUPERNET else SyntheticEvaluator(fail_fraction=0.0)
    result = run_search(problem, make_strategy(name), evaluator, LoopConfig(trials=TRIALS))
    for d in model.devices:
        assert d.predictor.latency_ms(result.arch) <= d.budget_ms * (1 + 1e-9), d.name
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["meets_budget"] is True
    assert [d["device"] for d in doc["devices"]] == ["cpu", "npu"]
    for reported, d in zip(doc["devices"], model.devices):
        assert reported["predicted_ms"] == pytest.approx(d.predictor.latency_ms(result.arch))
        assert reported["budget_ms"] == pytest.approx(d.budget_ms) and reported["meets_budget"] is True
    assert doc["predicted_latency_ms"] == pytest.approx(model.devices[0].predictor.latency_ms(result.arch))


def test_a_device_without_a_budget_is_reported_not_constrained(space, tables, tmp_path):
    cpu, npu = (LatencyPredictor(tables[n], space) for n in ("cpu", "npu"))
    model = MultiDevicePredictor([Device("cpu", cpu, budget_at(cpu, 0.2)), Device("npu", npu, None)])
    assert model.budget_ms == budget_at(cpu, 0.2)
    arch = Arch.create(space, space.sample(random.Random(0)))
    assert model.latency_ms(arch) == cpu.latency_ms(arch)
    report = {d["device"]: d for d in model.report(arch)}
    assert report["npu"]["budget_ms"] is None and report["npu"]["meets_budget"] is None
    assert report["npu"]["predicted_ms"] == npu.latency_ms(arch)


def clashing_tables(space, tables):
    """Two devices whose fastest choice of the layer without skip differ: at 0% each, no
    architecture meets both budgets, though each alone is feasible."""
    layer = next(layer for layer in space.layers if "skip" not in layer.candidates)
    a, b = (mac_table(space), mac_table(space))
    for table, cheap in ((a, layer.candidates[0]), (b, layer.candidates[-1])):
        for cand in layer.candidates:
            ms = 0.001 if cand == cheap else 1.0
            key = OpKey.for_op(layer.op(cand), space.build_config.name)
            table.put(key, Measurement(p10_ms=ms, p50_ms=ms, p90_ms=ms, mean_ms=ms, std_ms=0.0, count=10))
    return a, b


def test_budgets_met_alone_but_not_together_are_refused(space, tables):
    a, b = clashing_tables(space, tables)
    flags = parse_devices(["a=a.json", "b=b.json"], ["a=0%", "b=0%"])
    with pytest.raises(BudgetError, match="no architecture of space 'tiny' was found within every device's budget"):
        build_model(*flags, [LatencyPredictor(a, space), LatencyPredictor(b, space)])
    model, budget = build_model(*parse_devices(["a=a.json", "b=b.json"], ["a=0%", "b=100%"]),
                                [LatencyPredictor(a, space), LatencyPredictor(b, space)])
    assert model.latency_ms(closest_to_budgets(model)) <= budget


@pytest.fixture()
def lut_files(tables, tmp_path):
    for name, table in tables.items():
        table.save(tmp_path / f"{name}.json")
    return tmp_path


def search(tmp_path, *flags):
    return main(["search", "--strategy", "random", "--space", "tiny", "--data", "digits", "--trials", "3",
                 "--epochs", "1", "--max-batches", "1", "--no-progress", "--out", str(tmp_path / "run"), *flags])


def test_the_command_searches_under_each_devices_budget_and_prints_each(lut_files, capsys):
    d = lut_files
    assert search(d, "--lut", f"cpu={d / 'cpu.json'}", "--lut", f"npu={d / 'npu.json'}",
                  "--latency-budget", "cpu=40%", "--latency-budget", "npu=40%") == 0
    out = capsys.readouterr().out
    assert "predicted on each device" in out and "  cpu: " in out and "  npu: " in out
    doc = json.loads((d / "run" / "result.json").read_text())
    assert all(dev["meets_budget"] for dev in doc["devices"])
    assert set(doc["verify"]["devices"]) == {"cpu", "npu"}  # each device's check (skipped: fixture backends)


@pytest.mark.parametrize("flags, message", [
    (["--lut", "cpu.json", "--lut", "npu=npu.json"], "each names its device: write --lut NAME=cpu.json"),
    (["--lut", "cpu=cpu.json", "--lut", "cpu=npu.json"], "device 'cpu' is given twice"),
    (["--lut", "cpu=cpu.json", "--lut", "npu=npu.json", "--latency-budget", "8ms"],
     "does not say which device it budgets"),
    (["--lut", "cpu=cpu.json", "--lut", "npu=npu.json", "--latency-budget", "gpu=8ms"], "names no --lut device"),
    (["--lut", "cpu=cpu.json", "--lut", "npu=npu.json", "--latency-budget", "cpu=8ms", "--latency-budget",
      "cpu=9ms"], "two --latency-budget flags"),
    (["--lut", "cpu.json", "--latency-budget", "npu=8ms"], "no --lut has that name"),
    (["--lut", "cpu=cpu.json", "--lut", "npu=npu.json", "--latency-budget", "npu=fast"], "is not a duration"),
    (["--lut", "cpu=cpu.json", "--lut", "npu=npu.json", "--task-head", "lraspp"], "search one device"),
])
def test_flags_that_cannot_name_the_devices_are_refused_before_any_work(flags, message, lut_files, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(lut_files)
    assert search(Path("."), *flags) == 2
    assert message in capsys.readouterr().err
    assert not (lut_files / "run").exists()


def test_a_device_measured_over_its_budget_is_repaired_within_every_devices_budget(space, tables):
    from hwnas.latency_tables.validation import EndToEnd
    from hwnas.search.verify import _tightened, verify_on_device

    cpu, npu = (LatencyPredictor(tables[n], space) for n in ("cpu", "npu"))
    model = MultiDevicePredictor([Device("cpu", cpu, budget_at(cpu, 0.3)), Device("npu", npu, budget_at(npu, 0.6))])
    cpu = model.devices[0]
    rng = random.Random(3)
    feasible = [a for a in (Arch.create(space, space.sample(rng)) for _ in range(300))
                if model.latency_ms(a) <= model.budget_ms]
    arch = max(feasible, key=cpu.predictor.latency_ms)  # within every budget by prediction
    assert cpu.predictor.latency_ms(arch) * 1.3 > cpu.budget_ms

    def measure(a):  # the cpu runs 1.3x its table's prediction
        ms = cpu.predictor.latency_ms(a) * 1.3
        return EndToEnd(a, ms, ms, 0.01, 1.0)

    check = verify_on_device(arch, cpu.predictor, cpu.budget_ms, measure, repair_model=_tightened(model, "cpu"))
    assert check.repaired and check.meets_budget and check.arch != arch
    for d in model.devices:
        assert d.predictor.latency_ms(check.arch) <= d.budget_ms * (1 + 1e-9)


# --- HW-NAS-Bench's three devices (published tables of fbnet_cifar100) -----------------------------
HWNASBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nasbench" / "fbnet_hwnasbench"


@pytest.fixture(scope="module")
def hwnasbench_model(tmp_path_factory):
    if not (HWNASBENCH / "base_all_k3_e1.csv").is_file():
        pytest.skip(f"HW-NAS-Bench's FBNet tables are not in {HWNASBENCH} (../shared/data/nasbench)")
    from hwnas.profilers.table import LatencyTable

    folder = tmp_path_factory.mktemp("hwnasbench")
    space = get_space("fbnet_cifar100")
    predictors = []
    for device in ("raspi4", "pixel3", "eyeriss"):
        out = folder / f"{device}.json"
        assert main(["lut", "import", str(HWNASBENCH / f"fbnet_lut_{device}_cifar100_wide.csv"), "--format",
                     "hwnasbench", "--out", str(out)]) == 0
        predictors.append(LatencyPredictor(LatencyTable.load(out), space))
    flags = parse_devices([f"{d}={d}.json" for d in ("raspi4", "pixel3", "eyeriss")],
                          ["raspi4=25%", "pixel3=25%", "eyeriss=25%"])
    return build_model(*flags, predictors)[0]


def test_hwnasbench_devices_repair_within_all_three_budgets(hwnasbench_model):
    model = hwnasbench_model
    space = model.space
    slowest = {layer.name: "k5_e6" for layer in space.layers}
    flat = [[0.0] * len(layer.candidates) for layer in space.layers]
    repaired, steps = repair_to_budget(space, model, slowest, flat, model.budget_ms)
    assert len(steps) > 3
    for d in model.devices:
        assert d.predictor.latency_ms(repaired) <= d.budget_ms * (1 + 1e-9), d.name


@pytest.mark.parametrize("name", ["random", "evolution", "tpe"])
def test_hwnasbench_devices_every_trial_within_all_three_budgets(name, hwnasbench_model, tmp_path):
    model = hwnasbench_model
    problem = SearchProblem(model.space, model, model.budget_ms, None, tmp_path / "run", progress=False)
    result = run_search(problem, make_strategy(name), SyntheticEvaluator(fail_fraction=0.0), LoopConfig(trials=8))
    assert result.meets_budget and [d["device"] for d in result.devices] == ["raspi4", "pixel3", "eyeriss"]
    for d in model.devices:
        assert d.predictor.latency_ms(result.arch) <= d.budget_ms * (1 + 1e-9), d.name
