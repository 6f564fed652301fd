"""Calibration from end-to-end measurements and the fidelity report, with a deterministic
stand-in profiler (the real backends are covered by the profiler tests)."""

import json

import pytest

from hwnas.cli import main
from hwnas.latency_tables import LatencyTable, Measurement
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.latency_tables.validation import (
    calibrate_table,
    calibration_hashes,
    fidelity_report,
    measure_archs,
    sample_archs,
)
from hwnas.spaces import get_space
import test_spaces
from hwnas.latency_tables import OpKey
from hwnas.summary import count_macs
from test_predictor import hand_table


K_MS_PER_MAC = 1e-5


class LinearStandIn:
    """Deterministic stand-in for a backend: 1.3 x (MACs x K) + 0.2 ms, +-1% alternating per call
    of the same module. With a table whose op latencies are MACs x K, it is 1.3 x raw sum + 0.2."""

    def __init__(self):
        self.calls = 0
        self.per_module = {}

    def measure(self, module, input_shape):
        self.calls += 1
        n = self.per_module[id(module)] = self.per_module.get(id(module), 0) + 1
        wobble = 1.01 if n % 2 else 0.99
        raw = count_macs(module, input_shape)[0] * K_MS_PER_MAC
        ms = (1.3 * raw + 0.2) * wobble
        return Measurement(ms, ms, ms, ms, 0.0, 5)


def macs_table(space):
    """A table whose every op takes MACs x K ms."""
    table = LatencyTable(backend="torch-cpu", backend_options={"threads": 1}, device={"cpu": "test"},
                         spaces=[space.name], resolutions=[space.resolution])
    for op in space.all_ops():
        table.put(OpKey.for_op(op, space.build_config.name), Measurement(0, op_macs(space, op) * K_MS_PER_MAC, 0, 0, 0, 1))
    return table


def op_macs(space, op):
    return count_macs(test_spaces.op_module(space, op), op.input_shape(1))[0]


@pytest.fixture
def setup():
    space = get_space("tiny")
    table = macs_table(space)
    return space, table, LatencyPredictor(table, space), LinearStandIn()


def test_measure_archs_interleaves_rounds_and_reports_noise(setup):
    space, table, predictor, profiler = setup
    archs = sample_archs(space, 6, seed=0)
    results = measure_archs(profiler, space, archs, rounds=4)
    assert profiler.calls == 48  # each measurement follows one of the reference op
    for r in results:
        assert len(r.round_ms) == len(r.reference_ms) == 4
        assert 0.005 < r.noise_cv < 0.02  # the +-1% wobble
        assert r.measured_ms == pytest.approx(1.3 * predictor.raw_sum_ms(r.arch) + 0.2, rel=0.011)


def test_calibration_is_stored_per_resolution_and_used(setup):
    space, table, predictor, profiler = setup
    archs = sample_archs(space, 8, seed=0)
    calibration = calibrate_table(table, space, measure_archs(profiler, space, archs, rounds=2))
    # the stand-in is exactly 1.3 x sum + 0.2: linear and per-type fits both reproduce it
    assert calibration.model in ("linear", "types") and calibration.error_pct < 2.0
    assert set(table.calibration) == {"32"}
    assert calibration_hashes(table, 32) == {a.hash for a in archs}
    calibrated = LatencyPredictor(table, space)
    for arch in archs + sample_archs(space, 5, seed=9):
        assert calibrated.latency_ms(arch) == pytest.approx(1.3 * calibrated.raw_sum_ms(arch) + 0.2, rel=0.02)


def test_fidelity_report_contents(setup):
    space, table, predictor, profiler = setup
    held_out = sample_archs(space, 10, seed=1)
    report = fidelity_report(predictor, measure_archs(profiler, space, held_out, rounds=2))
    s = report["summary"]
    assert s["n_archs"] == 10 and len(report["archs"]) == 10
    row = report["archs"][0]
    assert {"arch", "raw_sum_ms", "calibrated_ms", "measured_ms", "noise_cv"} <= set(row)
    # uncalibrated: raw == calibrated, about 30% low, but perfectly ranked
    assert s["raw"]["mape_pct"] == pytest.approx(s["calibrated"]["mape_pct"])
    assert 20 < s["raw"]["mape_pct"] < 35 and s["raw"]["within_10pct"] == 0.0
    assert s["raw"]["kendall_tau"] > 0.9


class SlowerMachine(LinearStandIn):
    """The stand-in on a machine `factor` times slower at everything, the reference op included."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def measure(self, module, input_shape):
        ms = super().measure(module, input_shape).p50_ms * self.factor
        return Measurement(ms, ms, ms, ms, 0.0, 5)


def test_report_tells_the_machine_slowing_down_from_the_prediction_error(setup):
    space, table, _, profiler = setup
    calibrate_table(table, space, measure_archs(profiler, space, sample_archs(space, 8, seed=0), rounds=2))
    assert table.calibration["32"]["reference_ms"] > 0
    held_out = sample_archs(space, 10, seed=1)
    report = fidelity_report(LatencyPredictor(table, space), measure_archs(SlowerMachine(1.2), space, held_out, rounds=2))
    s = report["summary"]
    assert s["speed_vs_calibration"] == pytest.approx(1.2, rel=0.02)
    assert s["calibrated"]["mean_error_pct"] == pytest.approx(100 * (1 / 1.2 - 1), abs=1.5)  # 17% low on this machine now
    assert s["calibrated_speed_adjusted"]["mape_pct"] < 2.5  # the prediction itself is right
    assert all(r["speed_adjusted_ms"] == pytest.approx(r["measured_ms"] / 1.2, rel=0.025) for r in report["archs"])


def test_sampled_validation_archs_exclude_calibration_ones():
    space = get_space("tiny")
    first = sample_archs(space, 30, seed=0)
    rest = sample_archs(space, 30, seed=0, exclude={a.hash for a in first[:20]})
    assert not {a.hash for a in rest} & {a.hash for a in first[:20]}


def saved_hand_table(tmp_path):
    """The hand-set tiny table (see test_predictor) saved as a LUT file at 32 px."""
    table = hand_table(get_space("tiny"))
    table.resolutions = [32]
    lut = tmp_path / "lut.json"
    table.save(lut)
    return lut


def test_predict_cli(tmp_path, capsys):
    lut = saved_hand_table(tmp_path)
    arch = tmp_path / "a.json"
    arch.write_text(json.dumps({"space": "tiny", "choices": {"layer0": "skip", "layer1": "k5_e3", "layer2": "k3_e1_g2"}}))
    assert main(["predict", "--lut", str(lut), str(arch), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["latency_ms"] == pytest.approx(0.5 + 3.5 + 0.25 + 0.25)
    assert {"latency_ms", "raw_sum_ms", "error_pct", "params", "peak_activation_bytes"} <= set(doc)
    assert main(["predict", "--lut", str(lut), str(arch)]) == 0
    assert "uncalibrated" in capsys.readouterr().out


def test_predict_cli_bad_inputs(tmp_path, capsys):
    lut = saved_hand_table(tmp_path)
    assert main(["predict", "--lut", str(lut), "preset:fbnet_c"]) == 2
    assert "lacks" in capsys.readouterr().err
    assert main(["predict", "--lut", str(tmp_path / "none.json"), "preset:fbnet_c"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[]")
    assert main(["predict", "--lut", str(tmp_path / "bad.json"), "preset:fbnet_c"]) == 2
    assert "not an hwnas latency table" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["ort-cpu", "torch-cpu"])
def test_calibrate_then_validate_on_a_real_backend(backend, tmp_path, capsys):
    lut = tmp_path / "lut.json"
    assert main(["profile", "--space", "tiny", "--backend", backend, "--out", str(lut), "--quick", "--no-progress"]) == 0
    assert main(["calibrate", "--lut", str(lut), "--samples", "4", "--rounds", "2"]) == 0
    table = LatencyTable.load(lut)
    record = table.calibration["32"]
    assert record["n_samples"] == 4 and len(record["samples"]) == 4 and record["error_pct"] >= 0
    out = tmp_path / "val"
    arch = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "tiny", "--seed", "99", "--out", str(arch)]) == 0
    assert main(["validate", "--lut", str(lut), "--samples", "3", "--archs", str(arch), "--rounds", "2",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["n_archs"] == 4 and report["summary"]["backend"] == backend
    assert report["archs"][0]["label"] == str(arch)
    calibrated = {s["arch"] for s in record["samples"]}
    assert not calibrated & {r["arch"] for r in report["archs"][1:]}, "held-out archs exclude calibration ones"
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = LatencyTable.load(lut).calibration["32"]["validation"]
    assert stored["n_archs"] == 4 and stored["mape_pct"] == pytest.approx(report["summary"]["calibrated"]["mape_pct"])
    capsys.readouterr()
    assert main(["predict", "--lut", str(lut), str(arch), "--json"]) == 0
    stated = json.loads(capsys.readouterr().out)["error_pct"]
    assert stated == pytest.approx(max(record["error_pct"], stored["mape_pct"]))


def test_validate_and_calibrate_bad_inputs(tmp_path, capsys):
    lut = saved_hand_table(tmp_path)
    assert main(["calibrate", "--lut", str(lut), "--samples", "0"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err
    assert main(["validate", "--lut", str(lut), "--archs", "preset:fbnet_c", "--out", str(tmp_path / "v")]) == 2
    assert "not 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
    # a table from another device or with unreproducible options is refused before measuring
    assert main(["calibrate", "--lut", str(lut), "--samples", "2"]) == 2
    assert "cannot reproduce the table's backend options" in capsys.readouterr().err
