"""LUT format: canonical keys, atomic save/load, lookups, merge refusal."""

import json

import pytest

from hwnas.errors import LutError
from hwnas.latency_tables import LatencyTable, Measurement, OpKey, canonical_block
from hwnas.core.spaces import get_space


def m(ms: float) -> Measurement:
    return Measurement(p10_ms=ms * 0.9, p50_ms=ms, p90_ms=ms * 1.1, mean_ms=ms, std_ms=0.01, count=20)


def table(**overrides) -> LatencyTable:
    kwargs = dict(backend="torch-cpu", backend_options={"threads": 1}, device={"cpu": {"model": "X"}, "hostname": "a"})
    kwargs.update(overrides)
    return LatencyTable(**kwargs)


@pytest.mark.parametrize(
    "spelling",
    ["ir_r1_k3_s2_e6_c24", "ir_k3_r1_s2_e6.0_c24", "ir_c24_e6_s2_k3_r1_se0", "ir_r1_k3_s2_e6_c24_se0.0"],
)
def test_block_keys_are_canonical(spelling):
    assert canonical_block(spelling) == "ir_r1_k3_s2_e6_c24"


def test_ds_expansion_is_dropped_and_flags_kept():
    assert canonical_block("ds_r1_k3_s1_e1_c16_noskip") == "ds_r1_k3_s1_c16_noskip"
    assert canonical_block("ir_r1_k5_s1_e3_c40_se0.25_nhs") == "ir_r1_k5_s1_e3_c40_se0.25_nhs"


def test_op_key_round_trips_through_text():
    key = OpKey.create("block", "ir_k5_r1_s2_e6_c32", "relu-sigmoid-sin", (1, 24, 56, 56))
    assert key.text == "block:ir_r1_k5_s2_e6_c32|relu-sigmoid-sin|1x24x56x56|float32"
    assert OpKey.parse(key.text) == key


def test_space_ops_have_distinct_keys():
    space = get_space("fbnet")
    keys = {OpKey.for_op(op, space.build_config.name) for op in space.all_ops()}
    assert len(keys) == len(space.all_ops())


@pytest.mark.parametrize("bad", ["block:ir_r1_k3|x|1x2x3|float32", "nonsense", "conv:x|b|1x1x1x1|float32"])
def test_malformed_keys_are_refused(bad):
    with pytest.raises(LutError, match="malformed op key"):
        OpKey.parse(bad)


def test_save_load_round_trip_is_atomic(tmp_path):
    t = table()
    key = OpKey.create("stem", "c16_k3_s2", "relu-sigmoid-sin", (1, 3, 224, 224))
    t.put(key, m(1.5))
    path = tmp_path / "lut.json"
    t.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["lut.json"]  # no temp file left
    loaded = LatencyTable.load(path)
    assert loaded.get(key) == m(1.5)
    assert json.loads(path.read_text())["format"] == "hwnas.lut"


def test_missing_key_names_the_key_and_the_fix():
    t = table(spaces=["fbnet"])
    key = OpKey.create("stem", "c16_k3_s2", "relu-sigmoid-sin", (1, 3, 224, 224))
    with pytest.raises(LutError, match=r"stem:c16_k3_s2.*hwnas profile --space fbnet --backend torch-cpu"):
        t.get(key)


def test_merge_combines_entries_of_compatible_tables():
    a, b = table(), table(device={"cpu": {"model": "X"}, "hostname": "b"})
    ka = OpKey.create("stem", "c16_k3_s2", "r", (1, 3, 224, 224))
    kb = OpKey.create("stem", "c16_k3_s2", "r", (1, 3, 128, 128))
    a.put(ka, m(1.0))
    b.put(kb, m(2.0))
    merged = a.merge(b)
    assert merged.get(ka) == m(1.0) and merged.get(kb) == m(2.0)
    assert len(a) == 1  # inputs untouched


@pytest.mark.parametrize(
    "other, field",
    [
        (dict(backend="ort-cpu"), "backend"),
        (dict(backend_options={"threads": 2}), "backend_options"),
        (dict(device={"cpu": {"model": "Y"}}), "device"),
    ],
)
def test_merge_refuses_other_devices_backends_or_options(other, field):
    with pytest.raises(LutError, match=f"tables differ in {field}"):
        table().merge(table(**other))


def test_loading_garbage_is_a_lut_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something"}))
    with pytest.raises(LutError, match="not an hwnas latency table"):
        LatencyTable.load(path)
    path.write_text(json.dumps({"format": "hwnas.lut", "version": 1}))
    with pytest.raises(LutError, match="malformed"):
        LatencyTable.load(path)
