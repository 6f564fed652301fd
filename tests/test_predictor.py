"""The predictor on the tiny space against a hand-computed table; calibration on synthetic data."""

import random

import numpy as np
import pytest
import torch

from hwnas.core.arch import Arch
from hwnas.errors import LutError
from hwnas.latency_tables import LatencyTable, Measurement, OpKey
from hwnas.latency_tables.calibration import fit_calibration
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.core.spaces import get_space

# hand-set medians (ms) of every op of the tiny space
STEM, HEAD = 0.5, 0.25
LAYER_MS = {
    "layer0": {"k3_e1": 1.0, "k3_e1_g2": 0.75, "k3_e3": 2.0, "k5_e3": 3.0},
    "layer1": {"k3_e1": 1.5, "k3_e1_g2": 1.25, "k3_e3": 2.5, "k5_e3": 3.5},
    "layer2": {"k3_e1": 0.5, "k3_e1_g2": 0.25, "k3_e3": 1.0, "k5_e3": 2.0},
}


def measurement(ms, params=0, io=(0, 0)):
    return Measurement(ms * 0.9, ms, ms * 1.1, ms, 0.0, 10, param_bytes=params, input_bytes=io[0], output_bytes=io[1])


def hand_table(space, calibration=None):
    table = LatencyTable(backend="torch-cpu", backend_options={"threads": 1}, device={"cpu": {"model": "test"}}, spaces=[space.name])
    build = space.build_config.name
    table.put(OpKey.for_op(space.stem_op(), build), measurement(STEM, params=400, io=(3 * 32 * 32 * 4, 8 * 16 * 16 * 4)))
    for shape in space.final_shapes():
        table.put(OpKey.for_op(space.head_op(*shape), build), measurement(HEAD, params=4000))
    for layer in space.layers:
        for cand, ms in LAYER_MS[layer.name].items():
            # layers 1 and 2 never share a shape, so every op gets its own number
            table.put(OpKey.for_op(layer.op(cand), build), measurement(ms, params=100))
    table.calibration = calibration
    return table


@pytest.fixture
def space():
    return get_space("tiny")


def test_raw_sum_is_the_sum_of_stem_blocks_and_head(space):
    predictor = LatencyPredictor(hand_table(space), space)
    arch = Arch.create(space, {"layer0": "skip", "layer1": "k5_e3", "layer2": "k3_e1_g2"})
    assert predictor.raw_sum_ms(arch) == pytest.approx(STEM + 3.5 + 0.25 + HEAD)
    pred = predictor.predict(arch)
    assert pred.latency_ms == pred.raw_sum_ms and pred.error_pct is None
    assert pred.params == (400 + 100 + 100 + 4000) // 4
    assert pred.peak_activation_bytes == 3 * 32 * 32 * 4 + 8 * 16 * 16 * 4


def test_calibration_of_the_resolution_is_applied(space):
    cal = {"32": {"model": "linear", "a": 2.0, "b": 1.0, "error_pct": 3.0, "n_samples": 10, "resolution": 32}}
    predictor = LatencyPredictor(hand_table(space, cal), space)
    arch = Arch.create(space, {"layer0": "k3_e1", "layer1": "k3_e1", "layer2": "k3_e1"})
    raw = STEM + 1.0 + 1.5 + 0.5 + HEAD
    pred = predictor.predict(arch)
    assert pred.raw_sum_ms == pytest.approx(raw)
    assert pred.latency_ms == pytest.approx(2.0 * raw + 1.0)
    assert pred.error_pct == 3.0
    # a calibration at another resolution does not apply
    cal_other = {"64": cal["32"]}
    assert LatencyPredictor(hand_table(space, cal_other), space).predict(arch).latency_ms == pytest.approx(raw)


def test_expected_latency_is_the_probability_weighted_sum_and_differentiable(space):
    predictor = LatencyPredictor(hand_table(space), space)
    logits = [torch.zeros(len(l.candidates), requires_grad=True) for l in space.layers]
    probs = [torch.softmax(x, 0) for x in logits]
    expected = predictor.expected_latency(probs)
    by_hand = STEM + HEAD + sum(
        np.mean([LAYER_MS[l.name].get(c, 0.0) for c in l.candidates]) for l in space.layers
    )
    assert expected.item() == pytest.approx(by_hand, rel=1e-6)
    expected.backward()
    grad0 = dict(zip(space.layers[0].candidates, logits[0].grad.tolist()))
    # raising the logit of a slow candidate raises the expected latency; of skip lowers it
    assert grad0["k5_e3"] > 0 > grad0["skip"]


def test_one_hot_expected_latency_equals_the_arch_prediction(space):
    predictor = LatencyPredictor(hand_table(space), space)
    rng = random.Random(0)
    for _ in range(10):
        choices = space.sample(rng)
        one_hot = [torch.tensor([1.0 if c == choices[l.name] else 0.0 for c in l.candidates]) for l in space.layers]
        assert predictor.expected_latency(one_hot).item() == pytest.approx(predictor.latency_ms(Arch.create(space, choices)))


def test_fastest_latency(space):
    predictor = LatencyPredictor(hand_table(space), space)
    assert predictor.fastest_latency_ms() == pytest.approx(STEM + 0.0 + 1.25 + 0.0 + HEAD)


def test_table_missing_ops_is_refused_with_the_fix(space):
    table = hand_table(space)
    del table.entries[next(iter(table.entries))]
    with pytest.raises(LutError, match=r"lacks 1 of the 14 ops of space 'tiny'.*hwnas profile --space tiny"):
        LatencyPredictor(table, space)


def test_table_of_another_space_is_refused(space):
    fbnet = get_space("fbnet")
    with pytest.raises(LutError, match="ops of space 'fbnet'"):
        LatencyPredictor(hand_table(space), fbnet)


def test_predictions_are_fast_enough_for_evolution():
    import time

    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    rng = random.Random(0)
    archs = [Arch.create(space, space.sample(rng)) for _ in range(2000)]
    start = time.perf_counter()
    predictor.batch_latency_ms(archs)
    assert time.perf_counter() - start < 20  # generous bound; the benchmark gives the real rate


@pytest.mark.parametrize("model, a, b", [("scale", 1.2, 0.0), ("linear", 1.1, 2.0)])
def test_calibration_recovers_known_coefficients(model, a, b):
    rng = np.random.default_rng(0)
    raw = rng.uniform(5, 50, size=30)
    measured = a * raw + b
    cal = fit_calibration(raw, measured, resolution=224, model=model)
    assert cal.a == pytest.approx(a, rel=1e-9) and cal.b == pytest.approx(b, abs=1e-9)
    assert cal.error_pct == pytest.approx(0.0, abs=1e-6)


def test_calibration_error_is_cross_validated():
    rng = np.random.default_rng(1)
    raw = rng.uniform(5, 50, size=40)
    measured = 1.1 * raw * rng.normal(1.0, 0.05, size=40)
    cal = fit_calibration(raw, measured, resolution=224, model="scale")
    assert cal.a == pytest.approx(1.1, rel=0.03)
    assert 2.0 < cal.error_pct < 6.0  # ~ E|N(0, 5%)| = 4%


def test_calibration_needs_enough_positive_pairs():
    with pytest.raises(LutError, match="at least 3"):
        fit_calibration([1.0, 2.0], [1.0, 2.0], 224, model="linear")
    with pytest.raises(LutError, match="positive"):
        fit_calibration([1.0, -2.0], [1.0, 2.0], 224)


def test_ops_calibration_recovers_a_per_op_term():
    rng = np.random.default_rng(2)
    raw = rng.uniform(5, 50, size=30)
    n_ops = rng.integers(8, 24, size=30)
    measured = 1.05 * raw + 0.3 * n_ops + 0.5
    cal = fit_calibration(raw, measured, 224, model="ops", n_ops=n_ops)
    assert (cal.a, cal.b, cal.c) == pytest.approx((1.05, 0.5, 0.3), rel=1e-6)
    assert cal.apply(10.0, 12) == pytest.approx(1.05 * 10 + 0.3 * 12 + 0.5)
    with pytest.raises(LutError, match="needs the op count"):
        fit_calibration(raw, measured, 224, model="ops")


def test_ops_calibration_in_the_predictor_and_its_differentiable_form(space):
    cal = {"32": {"model": "ops", "a": 1.5, "b": 0.1, "c": 0.4, "error_pct": 1.0, "n_samples": 10, "resolution": 32}}
    predictor = LatencyPredictor(hand_table(space, cal), space)
    arch = Arch.create(space, {"layer0": "skip", "layer1": "k5_e3", "layer2": "k3_e1_g2"})
    raw = STEM + 3.5 + 0.25 + HEAD
    assert predictor.n_ops(arch) == 4
    assert predictor.latency_ms(arch) == pytest.approx(1.5 * raw + 0.4 * 4 + 0.1)
    one_hot = [torch.tensor([1.0 if c == arch.choice_map[l.name] else 0.0 for c in l.candidates]) for l in space.layers]
    assert predictor.expected_latency(one_hot).item() == pytest.approx(predictor.latency_ms(arch))
    # fastest: skip where possible (saves an op), the g2 candidate in layer1
    fastest = Arch.create(space, {"layer0": "skip", "layer1": "k3_e1_g2", "layer2": "skip"})
    assert predictor.fastest_latency_ms() == pytest.approx(predictor.latency_ms(fastest))


def test_types_calibration_scales_each_kind_of_op():
    space = get_space("tiny")
    predictor = LatencyPredictor(hand_table(space), space)
    rng = random.Random(5)
    archs = [Arch.create(space, space.sample(rng)) for _ in range(40)]
    scales = {"fixed": 1.0, "ir_e1": 0.8, "ir_e1_g": 1.5, "ir_e3": 1.2}
    sums = [predictor.type_sums(a) for a in archs]
    measured = [sum(scales[k] * v for k, v in s.items()) for s in sums]
    raw = [predictor.raw_sum_ms(a) for a in archs]
    cal = fit_calibration(raw, measured, 32, model="types", type_sums=sums)
    assert dict(cal.type_scales) == pytest.approx(scales, rel=1e-6) and cal.b == 0.0
    assert cal.error_pct == pytest.approx(0.0, abs=1e-6)
    table = hand_table(space, {"32": cal.to_dict()})
    calibrated = LatencyPredictor(table, space)
    for arch, m in zip(archs[:5], measured[:5]):
        assert calibrated.latency_ms(arch) == pytest.approx(m)
        one_hot = [torch.tensor([1.0 if c == arch.choice_map[l.name] else 0.0 for c in l.candidates]) for l in space.layers]
        assert calibrated.expected_latency(one_hot).item() == pytest.approx(m, rel=1e-5)
    fixed, costs = calibrated.layer_costs()
    assert calibrated.fastest_latency_ms() == pytest.approx(fixed + sum(float(c.min()) for c in costs))
