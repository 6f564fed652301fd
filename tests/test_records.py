"""The typed records of a latency table: the device fingerprint, a calibration and its held-out
validation. Each round-trips through its JSON form, the schema (hwnas/schemas/lut.schema.json)
accepts every record the code writes and names the field of a malformed one, and tables written
before the records were typed still load."""

import copy
import json
import math
from dataclasses import fields

import jsonschema
import pytest

from hwnas.errors import LutError
from hwnas.latency_tables import LatencyTable, Measurement
from hwnas.latency_tables.calibration import Calibration, Validation, calibration_for
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.latency_tables.sampling import calibration_samples, choice_costs
from hwnas.latency_tables.validation import calibrate_table, fidelity_report, measure_archs
from hwnas.profilers.interleaved import RoundsConfig
from hwnas.profilers.table import device_identity
from hwnas.core.reference import new_reference
from hwnas.runtimes.fingerprint import DeviceFingerprint, device_fingerprint
from hwnas.schemas import first_error, load_schema
from hwnas.core.spaces import get_space
from stand_in import SyntheticMachine, macs_table

QUICK = RoundsConfig(rounds=3, min_calls=2, max_calls=3, call_budget_s=0.0001, reference_calls=2, chunk_size=7)
SCHEMA = load_schema("lut")


def properties(*path: str) -> set[str]:
    node = SCHEMA
    for part in path:
        node = node[part]
    return set(node["properties"])


@pytest.fixture(scope="module")
def space():
    return get_space("tiny")


@pytest.fixture(scope="module")
def validated(space):
    """A table as `hwnas calibrate` then `hwnas validate` leave it (on the synthetic machine),
    and the fidelity report's summary."""
    table = macs_table(space)
    table.rounds = QUICK.to_dict()
    table.device = device_fingerprint(1, ("torch",))
    machine = SyntheticMachine()
    costs = choice_costs(space, LatencyPredictor(table, space).raw_sum_ms)
    samples = calibration_samples(space, costs, 12, 0)
    calibrate_table(table, space, measure_archs(machine, space, [s.arch for s in samples], table, QUICK), samples)
    held_out = calibration_samples(space, costs, 4, 1, exclude={s.arch.hash for s in samples})
    summary = fidelity_report(LatencyPredictor(table, space),
                              measure_archs(machine, space, [s.arch for s in held_out], table, QUICK))["summary"]
    table.calibration[str(space.resolution)]["validation"] = Validation.from_summary(summary, seed=1).to_dict()
    return table, summary


# --- the device fingerprint ------------------------------------------------------------------
def test_a_measured_fingerprint_round_trips_and_its_identity_leaves_out_the_moment():
    doc = device_fingerprint(1, ("torch", "numpy"))
    record = DeviceFingerprint.from_dict(doc)
    assert record.to_dict() == doc
    assert record.cpu["threads_used"] == 1 and record.libraries["torch"] and record.hostname
    assert not {"hostname", "time", "load", "clocks", "temperature"} & set(record.identity())
    later = {**doc, "hostname": "elsewhere", "time": "2030-01-01T00:00:00+00:00", "load": [9.0, 9.0, 9.0]}
    assert device_identity(later) == device_identity(doc) == record.identity()


def test_a_gpu_fingerprint_as_torch_and_nvml_report_it_matches_the_schema(monkeypatch):
    import hwnas.runtimes.fingerprint as fingerprint

    gpu = {"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85_045_395_456, "compute_capability": "9.0",
           "multiprocessors": 132, "cuda_runtime": "12.4", "cudnn": 90100, "driver": "550.54.15",
           "nvml_name": "NVIDIA H100 80GB HBM3", "max_sm_mhz": 1980, "max_mem_mhz": 2619, "power_limit_w": 700.0}
    monkeypatch.setattr(fingerprint, "gpu_info", lambda index: (gpu, {"clocks": {"sm_mhz": 1755, "mem_mhz": 2619},
                                                                      "temperature": 41}))
    doc = device_fingerprint(None, ("torch", "tensorrt"), gpu_index=0)
    record = DeviceFingerprint.from_dict(doc)
    assert record.gpu == gpu and record.to_dict() == doc
    assert "clocks" not in record.identity() and "temperature" not in record.identity()


def test_a_published_device_is_a_name_and_a_source():
    doc = {"name": "Samsung Galaxy Note10", "source": "https://example.org/lut", "published": True}
    record = DeviceFingerprint.from_dict(doc)
    assert (record.name, record.published, record.cpu) == ("Samsung Galaxy Note10", True, None)
    assert record.to_dict() == doc


def test_a_fingerprint_keeps_keys_it_does_not_know():
    doc = {"cpu": {"model": "X", "smt": "on"}, "npu": {"name": "Hexagon"}, "memory_free": 12}
    record = DeviceFingerprint.from_dict(doc)
    assert record.extra == {"npu": {"name": "Hexagon"}, "memory_free": 12}
    assert record.to_dict() == doc
    assert record.identity() == {"cpu": {"model": "X", "smt": "on"}, "npu": {"name": "Hexagon"}}


@pytest.mark.parametrize("device, field", [
    ({"cpu": "x86"}, "device/cpu: must be an object"),
    ({"cpu": {"model": "X", "logical_cpus": 0}}, "device/cpu/logical_cpus: must be >= 1"),
    ({"cpu": {"model": "X"}, "libraries": {"torch": 2}}, "device/libraries/torch"),
    ({"cpu": {"model": "X"}, "gpu": {"name": "H100", "memory_bytes": -1}}, "device/gpu/memory_bytes"),
    ({"published": True, "source": "somewhere"}, "'name' is a required property"),
    ({"hostname": "a"}, "'cpu' is a required property"),
])
def test_a_malformed_fingerprint_is_refused_naming_the_key(device, field):
    with pytest.raises(LutError, match="^device") as error:
        DeviceFingerprint.from_dict(device)
    assert field in str(error.value)


def test_a_table_with_a_malformed_device_does_not_load(tmp_path):
    doc = LatencyTable(backend="torch-cpu", backend_options={}, device={"cpu": {"model": "X"}}).to_dict()
    doc["device"]["cpu"]["isa"] = "avx2"
    with pytest.raises(LutError, match=r"device/cpu/isa: must be an array"):
        LatencyTable.from_dict(doc)


# --- calibration and validation --------------------------------------------------------------
def test_a_validation_round_trips_and_states_no_undefined_rank_correlation():
    record = Validation(4.2, 6, within_10pct=0.9, kendall_tau=0.8, noise_cv_median=0.01, speed_vs_table=1.1, seed=3,
                        groups=(("lopsided", 5.0), ("uniform", 3.0)), created="2026-12-06T16:00:00+00:00")
    assert Validation.from_dict(record.to_dict()) == record
    assert first_error(record.to_dict(), "lut", "validation") is None
    one_arch = {"n_archs": 1, "noise_cv_median": 0.0, "speed_vs_table": 1.0, "groups": {},
                "calibrated": {"mape_pct": 3.0, "within_10pct": 1.0, "kendall_tau": math.nan}}
    written = Validation.from_summary(one_arch).to_dict()
    assert written["kendall_tau"] is None and written["created"]  # NaN is no JSON a table may hold
    assert first_error(written, "lut", "validation") is None


def test_a_calibration_round_trips_with_its_validation():
    calibration = Calibration("types", 1.1, 0.0, 3.0, 12, 224, type_scales=(("fixed", 1.0), ("ir_e6", 1.2)),
                              validation=Validation(5.0, 8, kendall_tau=0.7), shrinkage=0.3,
                              group_error_pct=(("uniform", 2.0),), coverage={"raw_ms": [1.0, 2.0]}, noise_pct=1.5)
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    assert calibration.validated_error_pct == 5.0 and calibration.validated_n == 8
    assert calibration.stated_error_pct == 5.0
    assert "validation" not in calibration.fit_dict()  # what a search depends on: the fit alone
    assert first_error(calibration.to_dict(), "lut", "calibration") is None


def test_every_field_the_records_write_is_in_the_schema():
    calibration = Calibration("scale", 1.0, 0.0, 1.0, 2, 32, validation=Validation(1.0, 2, created="now"))
    assert set(calibration.to_dict()) <= properties("$defs", "calibration")
    assert set(calibration.validation.to_dict()) <= properties("$defs", "validation")
    assert {f.name for f in fields(DeviceFingerprint)} - {"extra"} <= properties("$defs", "device")
    assert set(device_fingerprint(1, ("torch",))["cpu"]) <= properties("$defs", "device", "properties", "cpu")
    assert set(Measurement(1, 1, 1, 1, 0, 1).to_dict()) <= properties("$defs", "measurement")
    assert set(RoundsConfig().to_dict()) <= properties("properties", "rounds")
    assert set(new_reference(get_space("tiny"))) <= properties("properties", "reference")


def test_a_written_table_with_calibration_and_validation_matches_the_schema(validated, space, tmp_path):
    table, summary = validated
    path = tmp_path / "lut.json"
    table.save(path)
    doc = json.loads(path.read_text())
    assert first_error(doc, "lut") is None
    jsonschema.validate(doc, SCHEMA)  # as another tool reading the published schema would
    record = doc["calibration"][str(space.resolution)]
    assert "validated_error_pct" not in record and "validated_n" not in record  # one place: `validation`
    assert record["validation"]["n_archs"] == summary["n_archs"] == 4 and record["validation"]["seed"] == 1
    loaded = calibration_for(LatencyTable.load(path).calibration, space.resolution)
    assert loaded.validation == Validation.from_dict(record["validation"])
    assert loaded.stated_error_pct == max(loaded.error_pct, loaded.noise_pct, summary["calibrated"]["mape_pct"])
    assert LatencyTable.load(path).fingerprint == DeviceFingerprint.from_dict(table.device)


@pytest.mark.parametrize("change, where", [
    (lambda v: v.update(mape_pct="3%"), "validation/mape_pct: must be a finite number"),
    (lambda v: v.pop("n_archs"), "'n_archs' is a required property"),
    (lambda v: v.update(kendall_tau=1.5), "validation/kendall_tau: must be <= 1"),
])
def test_a_malformed_validation_is_refused_naming_the_field(validated, space, change, where):
    doc = validated[0].to_dict()
    doc = copy.deepcopy(doc)
    change(doc["calibration"][str(space.resolution)]["validation"])
    with pytest.raises(LutError) as error:
        LatencyTable.from_dict(doc)
    assert f"calibration/{space.resolution}/" in str(error.value) and where in str(error.value)


# --- tables written before the records were typed --------------------------------------------
OLDER_TABLE = {
    "format": "hwnas.lut", "version": 1, "backend": "torch-cpu", "backend_options": {"threads": 1},
    "device": {"cpu": {"model": "AMD EPYC 7B13", "family_model_stepping": "25/1/1", "threads_used": 1,
                       "isa": ["avx", "avx2", "fma"], "logical_cpus": 2, "physical_cores": None},
               "os": {"system": "Linux", "python": "3.11"}, "libraries": {"torch": "2.5.1", "timm": None},
               "hostname": "vm-1", "time": "2025-03-01T10:00:00+00:00", "load": [0.5, 0.4, 0.3], "gpu": None},
    "batch": 1, "dtype": "float32", "spaces": ["tiny"], "resolutions": [32], "overhead_ms": None,
    "created": "2025-03-01T10:00:00+00:00", "entries": {}, "statistics": None, "rounds": None, "pending": {},
    "reference": {"space": "tiny", "resolution": 32, "num_classes": 10, "choices": {"layer0": "k3_e1"},
                  "ms": 1.5, "probes": 3, "measured": "2025-03-01T10:00:00+00:00"},
    "calibration": {"32": {
        "model": "scale", "a": 1.2, "b": 0.0, "c": 0.0, "error_pct": 3.0, "n_samples": 10, "resolution": 32,
        "type_scales": {}, "validated_error_pct": None, "validated_n": 0, "shrinkage": 0.0,
        "group_error_pct": {"uniform": 3.0}, "coverage": None, "noise_pct": 1.0, "space": "tiny", "num_classes": 10,
        "samples": [{"arch": "abc123", "raw_sum_ms": 4.0, "measured_ms": 4.8}],
        "validation": {"mape_pct": 6.5, "within_10pct": 0.8, "kendall_tau": 0.9, "n_archs": 12,
                       "noise_cv_median": 0.02, "seed": 0, "speed_vs_table": 1.01,
                       "groups": {"uniform": 6.0, "lopsided": 7.0}},
    }},
}


def test_an_older_table_still_loads_with_its_held_out_error():
    table = LatencyTable.from_dict(copy.deepcopy(OLDER_TABLE))
    assert table.device == OLDER_TABLE["device"]  # kept as written
    calibration = calibration_for(table.calibration, 32)
    assert calibration.validated_error_pct == 6.5 and calibration.validated_n == 12
    assert calibration.validation.created is None and calibration.stated_error_pct == 6.5
    # a `gpu: null` and no `gpu` both mean no GPU: the same device
    assert device_identity(table.device) == device_identity({k: v for k, v in table.device.items() if k != "gpu"})


def test_the_oldest_form_of_a_held_out_error_still_counts():
    record = {"model": "raw", "a": 1.0, "b": 0.0, "error_pct": 2.0, "n_samples": 3, "resolution": 32,
              "validated_error_pct": 4.0, "validated_n": 5}
    calibration = Calibration.from_dict(record)
    assert (calibration.validated_error_pct, calibration.validated_n, calibration.stated_error_pct) == (4.0, 5, 4.0)
    assert first_error(record, "lut", "calibration") is None
