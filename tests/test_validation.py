"""End-to-end measurement against the reference network, calibration and the fidelity report,
on a synthetic machine whose speed drifts (tests/stand_in.py); the real backends at the end."""

import json
import math

import pytest

from hwnas.cli import main
from hwnas.latency_tables import LatencyTable
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.latency_tables.sampling import calibration_samples, choice_costs, draw_samples, families
from hwnas.latency_tables.validation import (
    calibrate_table,
    calibration_hashes,
    fidelity_report,
    measure_archs,
)
from hwnas.profilers.interleaved import RoundsConfig
from hwnas.profilers.session import ProfileSettings, profile_space
from hwnas.core.spaces import get_space
from stand_in import SyntheticMachine, macs_table
from test_predictor import hand_table

QUICK = RoundsConfig(rounds=3, min_calls=2, max_calls=3, call_budget_s=0.0001, reference_calls=2, chunk_size=7)


@pytest.fixture
def space():
    return get_space("tiny")


def samples_of(space, table, count, seed, exclude=frozenset()):
    costs = choice_costs(space, LatencyPredictor(table, space).raw_sum_ms)
    return calibration_samples(space, costs, count, seed, exclude)


def truth(predictor, arch):
    """What the synthetic machine's networks take at speed 1: 1.3 x the raw sum + 0.2 ms."""
    return 1.3 * predictor.raw_sum_ms(arch) + 0.2


def test_measurements_are_interleaved_with_the_reference_and_rescaled_to_the_table(space):
    table = macs_table(space)
    archs = [s.arch for s in samples_of(space, table, 6, seed=0)]
    machine = SyntheticMachine(speed=lambda t: 1.5)  # everything 1.5x slower than at profiling
    results = measure_archs(machine, space, archs, table, QUICK)
    predictor = LatencyPredictor(table, space)
    for r in results:
        assert len(r.round_ms) == len(r.reference_ms) == 3
        assert r.speed == pytest.approx(1.5, rel=0.02)
        assert r.absolute_ms == pytest.approx(1.5 * truth(predictor, r.arch), rel=0.02)
        assert r.measured_ms == pytest.approx(truth(predictor, r.arch), rel=0.02)  # at the table's speed
    assert len(machine.prepared) == 6 + 1  # every network once, the reference once


def test_a_drifting_machine_keeps_the_error_of_a_steady_one(space):
    """Profile, calibrate and validate on a machine whose speed wanders by 1.6x while it works:
    the calibrated error stays what it is on a steady machine."""
    def run(speed, tmp):
        machine = SyntheticMachine(speed=speed)
        profile_space(space, machine, tmp / "t.json", ProfileSettings(rounds=QUICK, progress=False))
        table = LatencyTable.load(tmp / "t.json")
        samples = samples_of(space, table, 16, seed=1)
        calibrate_table(table, space, measure_archs(machine, space, [s.arch for s in samples], table, QUICK), samples)
        held_out = draw_samples(space, choice_costs(space, LatencyPredictor(table, space).raw_sum_ms), 12, 8, 7,
                                exclude=calibration_hashes(table, 32))
        report = fidelity_report(LatencyPredictor(table, space),
                                 measure_archs(machine, space, [s.arch for s in held_out], table, QUICK))
        return report["summary"]

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        steady = run(lambda t: 1.0, Path(a))
        drifting = run(lambda t: 1.3 + 0.3 * math.sin(t * 2.0), Path(b))
    assert steady["calibrated"]["mape_pct"] < 2.5
    assert drifting["calibrated"]["mape_pct"] <= steady["calibrated"]["mape_pct"] + 2.0
    assert drifting["calibrated"]["within_10pct"] == 1.0
    # it did drift, between the profile and the validation and within the validation, and the report says so
    assert abs(drifting["speed_vs_table"] - 1) > 0.1 and drifting["speed_range"][1] / drifting["speed_range"][0] > 1.1


def test_calibration_is_stored_per_resolution_with_its_samples_and_used(space):
    table = macs_table(space)
    samples = samples_of(space, table, 12, seed=0)
    measurements = measure_archs(SyntheticMachine(), space, [s.arch for s in samples], table, QUICK)
    calibration = calibrate_table(table, space, measurements, samples)
    assert calibration.model != "raw" and calibration.error_pct < 2.0
    record = table.calibration["32"]
    assert set(table.calibration) == {"32"} and record["num_classes"] == space.num_classes
    assert calibration_hashes(table, 32) == {s.arch.hash for s in samples}
    assert {s["family"] for s in record["samples"]} >= {"uniform", "cheap", "costly"}
    assert set(record["model_group_errors_pct"]["raw"]) == {"uniform", "lopsided"}
    calibrated = LatencyPredictor(table, space)
    for s in samples_of(space, table, 6, seed=9):
        assert calibrated.latency_ms(s.arch) == pytest.approx(truth(calibrated, s.arch), rel=0.03)


def test_fidelity_report_contents(space):
    table = macs_table(space)
    predictor = LatencyPredictor(table, space)
    held_out = samples_of(space, table, 10, seed=1)
    groups = ["lopsided" if s.lopsided else "uniform" for s in held_out]
    report = fidelity_report(predictor, measure_archs(SyntheticMachine(speed=lambda t: 1.2), space,
                                                      [s.arch for s in held_out], table, QUICK), groups=groups)
    s = report["summary"]
    assert s["n_archs"] == 10 and len(report["archs"]) == 10 and set(s["groups"]) == {"uniform", "lopsided"}
    row = report["archs"][0]
    assert {"arch", "raw_sum_ms", "calibrated_ms", "measured_ms", "absolute_ms", "speed", "noise_cv"} <= set(row)
    # uncalibrated: raw == calibrated, about 25% low, well ranked
    assert s["raw"]["mape_pct"] == pytest.approx(s["calibrated"]["mape_pct"])
    assert 15 < s["raw"]["mape_pct"] < 35 and s["raw"]["kendall_tau"] > 0.8
    assert s["speed_vs_table"] == pytest.approx(1.2, rel=0.02)
    # as measured now the machine is 1.2x slower: the prediction alone is 1.2x further off
    assert s["as_measured_unscaled"]["mean_error_pct"] < s["calibrated"]["mean_error_pct"] - 10


def test_lopsided_families_reach_the_corners():
    space = get_space("fbnet")
    costs = {d.name: {c: (0.0 if c == "skip" else float(c.split("_e")[1][0])) for c in d.choices} for d in space.decisions}
    drawn = draw_samples(space, costs, 0, 2 * len(families(space)), seed=3)
    by_family = {s.family: s.arch.choice_map for s in drawn}
    assert all(c.endswith("_e1") or c.endswith("_e1_g2") for c in by_family["only:e1"].values())
    assert all("e6" in c for c in by_family["only:e6"].values())
    skippable = [d.name for d in space.decisions if "skip" in d.choices]
    assert all(by_family["only:skip"][n] == "skip" for n in skippable)
    front = by_family["front"]
    names = [d.name for d in space.decisions]
    assert all(costs[n][front[n]] >= 3 for n in names[:len(names) // 2])
    assert all(costs[n][front[n]] <= 1 for n in names[len(names) // 2:])


def test_held_out_samples_exclude_the_calibration_ones_and_are_seeded(space):
    table = macs_table(space)
    first = samples_of(space, table, 20, seed=0)
    again = samples_of(space, table, 20, seed=0)
    assert [s.arch for s in first] == [s.arch for s in again]
    costs = choice_costs(space, LatencyPredictor(table, space).raw_sum_ms)
    rest = draw_samples(space, costs, 10, 10, seed=5, exclude={s.arch.hash for s in first})
    assert not {s.arch.hash for s in rest} & {s.arch.hash for s in first}


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
    assert {"latency_ms", "raw_sum_ms", "error_pct", "params", "peak_activation_bytes", "coverage_note"} <= set(doc)
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
    assert main(["calibrate", "--lut", str(lut), "--samples", "10", "--rounds", "2"]) == 0
    assert not (tmp_path / "lut.json.calibrate-progress.json").exists()
    table = LatencyTable.load(lut)
    record = table.calibration["32"]
    assert record["n_samples"] == 10 and len(record["samples"]) == 10 and record["error_pct"] >= 0
    out = tmp_path / "val"
    arch = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "tiny", "--seed", "99", "--out", str(arch)]) == 0
    assert main(["validate", "--lut", str(lut), "--samples", "3", "--lopsided", "2", "--archs", str(arch),
                 "--rounds", "2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["n_archs"] == 6 and report["summary"]["backend"] == backend
    assert report["archs"][0]["label"] == str(arch)
    calibrated = {s["arch"] for s in record["samples"]}
    assert not calibrated & {r["arch"] for r in report["archs"][1:]}, "held-out archs exclude calibration ones"
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = LatencyTable.load(lut).calibration["32"]
    validated = stored["validation"]
    assert validated["n_archs"] == 6
    capsys.readouterr()
    assert main(["predict", "--lut", str(lut), str(arch), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    stated = max(stored["error_pct"], stored["noise_pct"], validated["mape_pct"])
    assert doc["error_pct"] == pytest.approx(2 * stated if doc["coverage_note"] else stated)


def test_calibrate_takes_the_deployed_head(tmp_path, capsys):
    lut = tmp_path / "lut.json"
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                 "--no-progress"]) == 0
    assert main(["calibrate", "--lut", str(lut), "--samples", "4", "--num-classes", "7"]) == 2
    assert "--num-classes 7" in capsys.readouterr().err  # the table lacks that head: the fix is named
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                 "--no-progress", "--num-classes", "7", "--resume"]) == 0
    assert main(["calibrate", "--lut", str(lut), "--samples", "4", "--rounds", "2", "--num-classes", "7"]) == 0
    assert LatencyTable.load(lut).calibration["32"]["num_classes"] == 7


def test_validate_and_calibrate_bad_inputs(tmp_path, capsys):
    lut = saved_hand_table(tmp_path)
    assert main(["calibrate", "--lut", str(lut), "--samples", "0"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err
    assert main(["validate", "--lut", str(lut), "--archs", "preset:fbnet_c", "--out", str(tmp_path / "v")]) == 2
    assert "not 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
    a_file = tmp_path / "v.txt"
    a_file.write_text("not a folder")
    assert main(["validate", "--lut", str(lut), "--samples", "2", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err and a_file.read_text() == "not a folder"
    # a table from another device or with unreproducible options is refused before measuring
    assert main(["calibrate", "--lut", str(lut), "--samples", "2"]) == 2
    assert "cannot reproduce the table's backend options" in capsys.readouterr().err
    assert not (tmp_path / "lut.json.calibrate-progress.json").exists()


def test_calibrate_kill_9_then_resume_loses_no_finished_round(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    lut = tmp_path / "lut.json"
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                 "--no-progress"]) == 0
    progress = tmp_path / "lut.json.calibrate-progress.json"
    cmd = [sys.executable, "-m", "hwnas.cli", "calibrate", "--lut", str(lut), "--samples", "8", "--rounds", "60"]
    proc = subprocess.Popen(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and sum(len(v) for v in json.loads(progress.read_text())["rounds"].values()) >= 16:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    saved = json.loads(progress.read_text())
    done = {h: len(v) for h, v in saved["rounds"].items()}
    assert sum(done.values()) >= 16 and LatencyTable.load(lut).calibration is None
    assert main(["calibrate", "--lut", str(lut), "--samples", "8", "--rounds", "60"]) == 2  # not without --resume
    seen = []
    import hwnas.profilers.end_to_end as end_to_end  # measure_archs times through measure_end_to_end

    original = end_to_end.time_rounds

    def spy(items, reference, config, **kw):
        seen.append({h: len(v) for h, v in (kw.get("records") or {}).items() if v})
        return original(items, reference, config, **kw)

    end_to_end.time_rounds = spy
    try:
        assert main(["calibrate", "--lut", str(lut), "--samples", "8", "--seed", "5", "--resume"]) == 2  # other settings
        assert main(["calibrate", "--lut", str(lut), "--samples", "8", "--rounds", "60", "--resume"]) == 0
    finally:
        end_to_end.time_rounds = original
    assert seen[0] == done  # started from every finished round
    record = LatencyTable.load(lut).calibration["32"]
    assert [s["choices"] for s in record["samples"]] == [s["arch"]["choices"] for s in saved["samples"]]
    assert not progress.exists()


def test_validate_replaces_a_calibration_worse_than_the_raw_sum(tmp_path, capsys):
    lut = tmp_path / "lut.json"
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                 "--no-progress"]) == 0
    table = LatencyTable.load(lut)
    # a correction that triples every prediction: far worse than no correction at all
    table.calibration = {"32": {"model": "scale", "a": 3.0, "b": 0.0, "error_pct": 1.0, "n_samples": 10,
                                "resolution": 32, "samples": []}}
    table.save(lut)
    assert main(["validate", "--lut", str(lut), "--samples", "4", "--lopsided", "2", "--rounds", "2",
                 "--out", str(tmp_path / "v")]) == 0
    assert "worse than the raw LUT sum" in capsys.readouterr().out
    record = LatencyTable.load(lut).calibration["32"]
    assert record["model"] == "raw" and record["a"] == 1.0 and record["replaced_model"] == "scale"
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert record["validation"]["mape_pct"] == pytest.approx(report["summary"]["raw"]["mape_pct"])
