"""Issue 11's rules, each on synthetic data with a known answer: interleaved timing cancels
drift, bounded and shrunk calibration models, raw never beaten by a worse fit, the widened
error outside the calibration's coverage, and the search's on-device check and repair."""

import math
import random
import time

import numpy as np
import pytest
import torch

from hwnas.core.arch import Arch
from hwnas.latency_tables.calibration import CalibrationData, fit_calibration
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.latency_tables.validation import EndToEnd, fit_best_calibration
from hwnas.profilers.interleaved import RoundsConfig, reference_median, summarise, time_rounds
from hwnas.search.verify import verify_on_device
from hwnas.core.spaces import get_space
from test_predictor import hand_table


# --- interleaved rounds ------------------------------------------------------------------------
class Clocked:
    """Items of known cost on a machine whose speed is a function of its virtual time."""

    def __init__(self, speed):
        self.t, self.speed = 0.0, speed

    def item(self, cost_ms):
        def call():
            ms = cost_ms * self.speed(self.t)
            self.t += ms / 1000
            return ms
        return call


def test_interleaved_rounds_cancel_a_machine_that_slows_down_midway():
    machine = Clocked(lambda t: 1.0 if t < 0.5 else 1.4)  # 40% slower after half a second
    costs = {f"op{i}": 0.5 + 0.25 * i for i in range(24)}
    config = RoundsConfig(rounds=5, segment_size=4, min_calls=3, max_calls=3, reference_calls=3)
    records = time_rounds({k: machine.item(c) for k, c in costs.items()}, machine.item(4.0), config, seed=1)
    r0 = reference_median(records)
    for key, cost in costs.items():
        assert summarise(records[key], r0)["p50_ms"] == pytest.approx(cost * r0 / 4.0, rel=0.01)
    assert machine.speed(machine.t) == 1.4  # the drift happened while timing


def test_timing_one_op_after_another_does_not_cancel_it():
    """The contrast: the same machine, each op timed to completion in turn (the old way)."""
    machine = Clocked(lambda t: 1.0 if t < 0.5 else 1.4)
    costs = [0.5 + 0.25 * i for i in range(24)]
    sequential = [np.median([machine.item(c)() for _ in range(15)]) / c for c in costs]
    assert max(sequential) / min(sequential) == pytest.approx(1.4)


def test_a_segment_the_reference_saw_drift_in_is_timed_again():
    speeds = iter([1.0] * 4 + [1.5] * 10_000)  # a step within the first segment, then steady
    current = {"speed": 1.0}

    def item(cost):
        def call():
            current["speed"] = next(speeds)
            return cost * current["speed"]
        return call

    config = RoundsConfig(rounds=1, segment_size=2, min_calls=2, max_calls=2, reference_calls=1, warmup_calls=0)
    records = time_rounds({"a": item(1.0), "b": item(2.0)}, item(3.0), config, seed=0)
    assert records["a"][0].retried == 1 and records["a"][0].time_ms == pytest.approx(1.5)
    assert summarise(records["a"], 3.0)["remeasured"] == 1


def test_rounds_already_timed_are_kept_and_not_timed_again():
    machine = Clocked(lambda t: 1.0)
    first = time_rounds({"a": machine.item(1.0)}, machine.item(2.0), RoundsConfig(rounds=2), seed=0)
    calls_before = machine.t
    more = time_rounds({"a": machine.item(1.0)}, machine.item(2.0), RoundsConfig(rounds=3), seed=0, records=first)
    assert more["a"][:2] == first["a"] and len(more["a"]) == 3 and machine.t > calls_before
    same = time_rounds({"a": machine.item(1.0)}, machine.item(2.0), RoundsConfig(rounds=3), seed=0, records=more)
    assert same == more


# --- calibration models ----------------------------------------------------------------------
def _lopsided_data(rng, n=40, rare_share=0.0):
    """Per-category raw sums for half uniform-like, half lopsided networks."""
    sums, groups = [], []
    for i in range(n):
        lopsided = i % 2 == 1
        e1 = rng.uniform(2.5, 3.5) if lopsided and i % 4 == 1 else rng.uniform(0.3, 1.2)
        e6 = rng.uniform(3.0, 4.0) if lopsided and i % 4 == 3 else rng.uniform(0.5, 1.5)
        row = {"fixed": 0.8, "ir_e1": e1, "ir_e6": e6}
        if rare_share:
            row["ir_e3"] = rare_share if i == 0 else 0.0
        sums.append(row)
        groups.append("lopsided" if lopsided else "uniform")
    return sums, groups


def test_types_model_recovers_known_per_type_scales_from_lopsided_samples():
    sums, groups = _lopsided_data(random.Random(0))
    scales = {"fixed": 1.1, "ir_e1": 0.8, "ir_e6": 1.25}
    measured = [sum(scales[k] * v for k, v in s.items()) for s in sums]
    raw = [sum(s.values()) for s in sums]
    best, fitted = fit_best_calibration(CalibrationData.create(raw, measured, [10] * 40, sums, groups), 224)
    assert best.model == "types" and dict(best.type_scales) == pytest.approx(scales, rel=1e-4)
    assert best.error_pct < 1e-3 and fitted["raw"].error_pct > 5


def test_a_type_seen_once_stays_near_the_common_scale():
    sums, groups = _lopsided_data(random.Random(1), rare_share=0.6)
    rng = np.random.default_rng(2)
    measured = [1.1 * sum(s.values()) * rng.normal(1.0, 0.02) for s in sums]
    raw = [sum(s.values()) for s in sums]
    cal = fit_calibration(raw, measured, 224, model="types", type_sums=sums, groups=groups)
    # unshrunk, one sample decides e3's scale alone; shrunk it stays near the common 1.1
    assert cal.shrinkage > 0 and dict(cal.type_scales)["ir_e3"] == pytest.approx(1.1, abs=0.25)
    free = fit_calibration(raw, measured, 224, model="types", type_sums=sums, groups=groups, shrinkage=0.0)
    assert abs(dict(free.type_scales)["ir_e3"] - 1.1) > abs(dict(cal.type_scales)["ir_e3"] - 1.1)


def test_parameters_cannot_run_away():
    raw = [1.0, 2.0, 3.0, 4.0, 5.0]
    measured = [10.0 * r for r in raw]  # a 10x "correction" is a broken table, not a correction
    cal = fit_calibration(raw, measured, 224, model="scale")
    assert cal.a == pytest.approx(4.0)
    cal = fit_calibration(raw, [r + 100 for r in raw], 224, model="linear")
    assert abs(cal.b) <= 0.5 * 101 + 1e-9


def test_without_a_better_fit_the_raw_sum_is_kept():
    rng = np.random.default_rng(3)
    raw = rng.uniform(2, 10, size=30)
    best, fitted = fit_best_calibration(CalibrationData.create(raw, raw, np.full(30, 12.0)), 224)
    assert best.model == "raw" and best.a == 1.0 and best.error_pct == 0.0
    scaled, _ = fit_best_calibration(CalibrationData.create(raw, 1.2 * raw, np.full(30, 12.0)), 224)
    assert scaled.model == "scale" and scaled.a == pytest.approx(1.2)


def test_the_error_is_stated_for_the_worse_sample_group():
    raw = np.linspace(2, 10, 20)
    groups = ["uniform", "lopsided"] * 10
    measured = raw * np.where(np.array(groups) == "lopsided", np.tile([1.1, 1.1, 0.9, 0.9], 5), 1.0)
    cal = fit_calibration(raw, measured, 224, model="raw", groups=groups)
    assert dict(cal.group_error_pct)["uniform"] == 0.0 and cal.error_pct == pytest.approx(
        dict(cal.group_error_pct)["lopsided"])


# --- coverage ------------------------------------------------------------------------------
def test_an_architecture_unlike_the_calibration_gets_a_widened_error_and_the_reason():
    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    # calibrated only on networks whose blocks are e3: the e1 share never exceeded 0
    archs = [Arch.create(space, {"layer0": a, "layer1": b, "layer2": c})
             for a in ("k3_e3", "k5_e3") for b in ("k3_e3", "k5_e3") for c in ("k3_e3", "k5_e3")]
    raw = [predictor.raw_sum_ms(a) for a in archs]
    cal = fit_calibration(raw, [1.1 * r for r in raw], 32, model="scale",
                          type_sums=[predictor.type_sums(a) for a in archs])
    table = hand_table(space, {"32": cal.to_dict()})
    calibrated = LatencyPredictor(table, space)
    inside = calibrated.predict(archs[3])
    assert inside.coverage_note is None and inside.error_pct == cal.stated_error_pct
    all_e1 = calibrated.predict(Arch.create(space, {"layer0": "k3_e1", "layer1": "k3_e1", "layer2": "k3_e1"}))
    assert all_e1.error_pct == pytest.approx(2 * cal.stated_error_pct)
    assert "ir_e1" in all_e1.coverage_note or "raw sum" in all_e1.coverage_note


# --- the budget verified on the device -------------------------------------------------------
def fake_measure(predictor, factor):
    """A stand-in device: every network runs `factor` x its prediction; counts its calls."""
    calls = []

    def measure(arch):
        calls.append(arch)
        ms = predictor.latency_ms(arch) * factor
        return EndToEnd(arch, ms, ms * 1.1, 0.01, 1.1)
    return measure, calls


def test_a_result_within_budget_is_measured_once_and_kept():
    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    arch = Arch.create(space, {"layer0": "k3_e3", "layer1": "k3_e3", "layer2": "k3_e3"})
    measure, calls = fake_measure(predictor, 0.95)
    check = verify_on_device(arch, predictor, predictor.latency_ms(arch), measure)
    assert check.arch == arch and check.meets_budget and not check.repaired and len(calls) == 1
    doc = check.to_dict()
    assert doc["measured_over_budget"] == pytest.approx(0.95) and doc["speed_vs_table"] == 1.1


def test_a_result_over_budget_is_repaired_with_measured_feedback():
    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    arch = Arch.create(space, {"layer0": "k5_e3", "layer1": "k5_e3", "layer2": "k5_e3"})
    budget = predictor.latency_ms(arch)  # met by the LUT, but the device runs 1.25x the prediction
    measure, calls = fake_measure(predictor, 1.25)
    check = verify_on_device(arch, predictor, budget, measure)
    assert check.repaired and check.meets_budget and check.arch != arch
    first, final = check.attempts[0], check.attempts[-1]
    assert first["measured_ms"] == pytest.approx(1.25 * budget)
    assert final["measured_ms"] <= budget and final["lut_budget_ms"] <= budget / 1.25
    assert final["repair_steps"] and len(calls) == len(check.attempts)


def test_a_result_that_cannot_be_repaired_says_so():
    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    fastest = Arch.create(space, {"layer0": "skip", "layer1": "k3_e1_g2", "layer2": "skip"})
    measure, _ = fake_measure(predictor, 3.0)
    check = verify_on_device(fastest, predictor, predictor.latency_ms(fastest), measure)
    assert check.meets_budget is False and "cannot repair" in check.note
    assert math.isclose(check.to_dict()["measured_over_budget"], 3.0)


def test_search_ends_by_measuring_its_result_on_this_machine(tmp_path, capsys):
    """With a table of this very machine, `hwnas search` measures its pick end to end against the
    budget and records both figures; --no-verify skips it; a foreign table says why it is skipped."""
    import json

    from hwnas.cli import main

    lut = tmp_path / "lut.json"
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                 "--no-progress"]) == 0
    search = ["search", "--strategy", "random", "--space", "tiny", "--lut", str(lut), "--data", "digits",
              "--no-progress", "--trials", "2", "--epochs", "1", "--max-batches", "2", "--batch-size", "32",
              "--latency-budget", "80%"]
    assert main([*search, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "measured end to end" in printed and "x the budget" in printed
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    verify = result["verify"]
    assert verify["skipped"] is None and verify["measured_ms"] > 0 and verify["absolute_ms"] > 0
    assert verify["measured_over_budget"] == pytest.approx(verify["measured_ms"] / verify["budget_ms"])
    assert verify["arch_hash"] == result["arch_hash"]
    assert main([*search, "--out", str(tmp_path / "b"), "--no-verify"]) == 0
    assert "verify" not in json.loads((tmp_path / "b" / "result.json").read_text())


# --- the thread clock ------------------------------------------------------------------------
class Sleeper(torch.nn.Module):
    """Holds the call 30 ms without using the CPU: what a preempted call looks like to a wall clock."""

    def forward(self, x):
        time.sleep(0.03)
        return x


def test_the_thread_clock_leaves_out_time_the_core_was_taken_away():
    from hwnas.profilers import get_profiler

    with get_profiler("torch-cpu", clock="wall") as wall, get_profiler("torch-cpu") as default:
        assert default.options()["clock"] == "thread" and wall.options()["clock"] == "wall"
        with wall.prepare(Sleeper(), (1, 1, 2, 2)) as runner:
            assert runner.time_call() >= 30
        with default.prepare(Sleeper(), (1, 1, 2, 2)) as runner:
            assert runner.time_call() < 5


def test_the_thread_clock_needs_one_thread(capsys, tmp_path):
    from hwnas.cli import main

    assert main(["profile", "--space", "tiny", "--backend", "ort-cpu", "--threads", "2", "--clock", "thread",
                 "--out", str(tmp_path / "t.json")]) == 2
    assert "use --clock wall" in capsys.readouterr().err


# --- a task model's budget -----------------------------------------------------------------------
def test_a_task_head_replaces_the_classifier_head_in_every_prediction():
    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    arch = Arch.create(space, {"layer0": "k3_e3", "layer1": "k5_e3", "layer2": "k3_e1"})
    before, fastest = predictor.latency_ms(arch), predictor.fastest_latency_ms()
    predictor.use_task_head(4.0)  # a measured detection head of 4 ms; the classifier head took 0.25
    assert predictor.task_head_offset_ms == pytest.approx(4.0 - 0.25)
    assert predictor.latency_ms(arch) == pytest.approx(before + 3.75)
    assert predictor.predict(arch).raw_sum_ms == pytest.approx(before)  # the LUT sum itself is unchanged
    assert predictor.fastest_latency_ms() == pytest.approx(fastest + 3.75)
    one_hot = [torch.tensor([1.0 if c == arch.choice_map[l.name] else 0.0 for c in l.candidates]) for l in space.layers]
    assert predictor.expected_latency(one_hot).item() == pytest.approx(before + 3.75)


def test_search_with_a_task_head_budgets_the_task_model(tmp_path, capsys, monkeypatch):
    import json

    import hwnas.transfer.latency as task_latency
    from hwnas.cli import main

    timed = task_latency.TaskLatency("torch-cpu", 1, "wall", 64, total_ms=7.0, backbone_ms=1.0, head_ms=6.0)
    monkeypatch.setattr(task_latency, "task_head_latency", lambda *a, **k: timed)  # stands in for the timing
    lut = tmp_path / "lut.json"
    assert main(["profile", "--space", "tiny", "--backend", "torch-cpu", "--out", str(lut), "--quick",
                 "--no-progress"]) == 0
    assert main(["search", "--strategy", "random", "--space", "tiny", "--lut", str(lut), "--data", "digits",
                 "--no-progress", "--trials", "1", "--epochs", "1", "--max-batches", "1", "--batch-size", "32",
                 "--task-head", "lraspp", "--out", str(tmp_path / "s")]) == 0
    assert "the lraspp head measured 6 ms" in capsys.readouterr().out
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert result["predicted_latency_ms"] > 6.0
    verify = result["verify"]
    assert verify["measured_ms"] > 6.0 - 1.0  # the classifier network measured, its head swapped for the task's
