"""Every file hwnas reads is checked on load, values included (issue 16, defect 1): a bad entry is a
one-line error naming the file, the key and the fix, exit 2, within seconds; the formats are
published as JSON Schemas; the search's budget loops are bounded."""

import json
import math
import time

import pytest
import torch

from hwnas.core.arch import Arch, arch_from_dict, save_arch
from hwnas.cli import main
from hwnas.errors import ArchError, HwnasError, LutError
from hwnas.latency_tables import LatencyTable, Measurement
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.core.models import arch_model
from hwnas.preprocessing import Preprocessing
from hwnas.schemas import SCHEMAS, load_schema
from hwnas.search import BudgetError
from hwnas.search.budget import fill_budget, repair_to_budget
from hwnas.core.spaces import get_space
from hwnas.core.weights import load_weights, save_weights
from lut_fixtures import mac_table

CHOICES = {"layer0": "k3_e1", "layer1": "k3_e3", "layer2": "skip"}


@pytest.fixture(scope="module")
def space():
    return get_space("tiny")


@pytest.fixture(scope="module")
def good_doc(space):
    return mac_table(space).to_dict()


def first_block_key(doc):
    return next(k for k in doc["entries"] if k.startswith("block:"))


def bad_table(doc, tmp_path, edit, name="bad.json"):
    doc = json.loads(json.dumps(doc))
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))  # json writes NaN / Infinity as Python reads them back
    return path


def set_entry(field, value):
    def edit(doc):
        doc["entries"][first_block_key(doc)][field] = value
    return edit


BAD_ENTRIES = [
    ("p50_ms", float("nan"), "must be a finite number, got nan"),
    ("p50_ms", float("inf"), "must be a finite number, got inf"),
    ("p50_ms", -4.0, "must be >= 0, got -4.0"),
    ("p50_ms", "3", "must be a finite number, got '3'"),
    ("p50_ms", None, "must be a finite number, got None"),
    ("mean_ms", float("-inf"), "must be a finite number"),
    ("count", 0, "must be >= 1, got 0"),
    ("count", 2.5, "must be an integer"),
    ("peak_bytes", -1, "must be >= 0"),
    ("rel_ci", float("nan"), "must be a finite number or null"),
    ("p10_ms", 1e9, "percentiles out of order"),
]


@pytest.mark.parametrize("field, value, message", BAD_ENTRIES, ids=[f"{f}={v!r}" for f, v, _ in BAD_ENTRIES])
def test_a_bad_measurement_is_refused_with_file_key_and_fix(good_doc, tmp_path, field, value, message):
    path = bad_table(good_doc, tmp_path, set_entry(field, value))
    with pytest.raises(LutError) as info:
        LatencyTable.load(path)
    text = str(info.value)
    assert str(path) in text and first_block_key(good_doc) in text and message in text, text
    assert "hwnas profile" in text and "\n" not in text


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(batch=0), "batch: must be >= 1"),
    (lambda d: d.update(dtype="float64"), "dtype: must be one of"),
    (lambda d: d.update(overhead_ms=float("nan")), "overhead_ms: must be a finite number or null"),
    (lambda d: d.update(resolutions=[224, -1]), "resolutions/1: must be >= 1"),
    (lambda d: d["entries"].update({"block:ir_r1_k3|x|1x2x3|float32": d["entries"][first_block_key(d)]}), "entries: "),
    (lambda d: d.update(calibration={"32": {"model": "scale", "a": float("nan"), "b": 0, "error_pct": 1,
                                            "n_samples": 3, "resolution": 32}}), "calibration/32/a"),
    (lambda d: d.update(calibration={"32": {"model": "magic", "a": 1, "b": 0, "error_pct": 1, "n_samples": 3,
                                            "resolution": 32}}), "calibration/32/model: must be one of"),
    (lambda d: d.pop("entries"), "'entries' is a required property"),
])
def test_bad_table_fields_are_refused(good_doc, tmp_path, edit, message):
    path = bad_table(good_doc, tmp_path, edit)
    with pytest.raises(LutError, match=message.replace("(", r"\(").replace("|", r"\|")):
        LatencyTable.load(path)


def test_newer_writers_may_add_fields(good_doc, tmp_path):
    """Forward compatibility: unknown top-level, entry and calibration fields are accepted."""
    def edit(doc):
        doc["added_by_a_newer_writer"] = {"block": "ir_r1_k3_s1_e1_c8", "p50_ms": 0.1}
        doc["entries"][first_block_key(doc)]["rounds"] = 7
        doc["calibration"] = {"32": {"model": "scale", "a": 1.1, "b": 0.0, "error_pct": 2.0, "n_samples": 4,
                                     "resolution": 32, "samples": [], "something_new": True}}
    table = LatencyTable.load(bad_table(good_doc, tmp_path, edit))
    assert len(table) == len(good_doc["entries"])


def test_schemas_are_published_and_describe_the_shipped_tables():
    from importlib import resources

    import jsonschema

    for name in SCHEMAS:
        schema = load_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
    lut = load_schema("lut")
    for path in resources.files("hwnas.latency_tables").iterdir():
        if path.name.endswith(".json"):
            doc = json.loads(path.read_text())
            jsonschema.Draft202012Validator(lut).validate(doc)  # a third party can check its tables alike
            LatencyTable.from_dict(doc, source=path.name)


def test_measurement_values_are_checked_in_memory_too():
    good = dict(p10_ms=1.0, p50_ms=1.0, p90_ms=1.0, mean_ms=1.0, std_ms=0.0, count=1)
    assert Measurement.from_dict(good).p50_ms == 1.0
    with pytest.raises(LutError, match="p90_ms: must be >= 0"):
        Measurement.from_dict({**good, "p90_ms": -1})


# --- every command that reads a table: exit 2 in seconds -------------------------------------
@pytest.fixture
def nan_table(good_doc, tmp_path):
    def edit(doc):
        for m in doc["entries"].values():
            m["p50_ms"] = float("nan")
    return bad_table(good_doc, tmp_path, edit, "nan.json")


@pytest.fixture
def tiny_arch_file(tmp_path, space):
    path = tmp_path / "arch.json"
    save_arch(Arch.create(space, CHOICES), path)
    return path


def commands(table, arch, tmp_path):
    return {
        "predict": ["predict", "--lut", str(table), str(arch)],
        "lut show": ["lut", "show", str(table)],
        "lut merge": ["lut", "merge", str(table), str(table), "--out", str(tmp_path / "merged.json")],
        "search": ["search", "--space", "tiny", "--lut", str(table), "--latency-budget", "50%", "--data", "digits",
                   "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"],
        "validate": ["validate", "--lut", str(table), "--samples", "2", "--out", str(tmp_path / "val")],
        "export --lut": ["export", str(arch), "--onnx", str(tmp_path / "m.onnx"), "--lut", str(table)],
    }


@pytest.mark.parametrize("command", ["predict", "lut show", "lut merge", "search", "validate", "export --lut"])
def test_a_nan_table_ends_every_command_with_exit_2_in_seconds(command, nan_table, tiny_arch_file, tmp_path, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    start = time.perf_counter()
    code = main(commands(nan_table, tiny_arch_file, tmp_path)[command])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("hwnas: error:") and "\n" not in err, err
    assert "must be a finite number, got nan" in err and str(nan_table) in err
    assert elapsed < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_lut_merge_does_not_carry_bad_values_over(good_doc, tmp_path, capsys):
    good = bad_table(good_doc, tmp_path, lambda d: None, "good.json")
    bad = bad_table(good_doc, tmp_path, set_entry("p50_ms", -1.0), "bad.json")
    out = tmp_path / "merged.json"
    assert main(["lut", "merge", str(good), str(bad), "--out", str(out)]) == 2
    assert "bad.json" in capsys.readouterr().err and not out.exists()


# --- architectures and weights ---------------------------------------------------------------
def test_an_architecture_with_a_non_string_choice_is_refused():
    with pytest.raises(ArchError, match="choices/layer0: must be a string, got 3"):
        arch_from_dict({"space": "tiny", "choices": {"layer0": 3, "layer1": "k3_e1", "layer2": "skip"}}, "a.json")


@pytest.fixture
def weights_file(tmp_path, space):
    arch = Arch.create(space, CHOICES)
    path = tmp_path / "model.pt"
    save_weights(path, arch, arch_model(arch, num_classes=10), num_classes=10, resolution=32,
                 preprocessing=Preprocessing((0.5,) * 3, (0.5,) * 3))
    return path


def rewrite(path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(num_classes=0), "num_classes: must be >= 1"),
    (lambda p: p.update(resolution=float("nan")), "resolution: must be an integer"),
    (lambda p: p["preprocessing"].update(std=[0.5, 0.0, 0.5]), "preprocessing/std/1: must be > 0"),
    (lambda p: p["preprocessing"].update(resize="zoom"), "preprocessing/resize: must be one of"),
    (lambda p: p["arch"]["choices"].update(layer0=None), "arch/choices/layer0: must be a string"),
    (lambda p: next(iter(p["state_dict"].values())).fill_(float("nan")), "holds NaN or infinite values"),
    (lambda p: p["state_dict"].update(extra="x"), "state_dict/extra is a str"),
])
def test_bad_weights_are_refused(weights_file, edit, message):
    rewrite(weights_file, edit)
    with pytest.raises(HwnasError, match=message.replace("/", "/")) as info:
        load_weights(weights_file)
    assert str(weights_file) in str(info.value)


def test_weights_carry_the_preprocessing_and_old_files_get_their_data_source(weights_file):
    assert load_weights(weights_file)["preprocessing"] == Preprocessing((0.5,) * 3, (0.5,) * 3)

    def to_v1(payload):
        payload.update(version=1, extra={"data": "digits"})
        payload.pop("preprocessing")
    rewrite(weights_file, to_v1)
    assert load_weights(weights_file)["preprocessing"].mean == (0.5, 0.5, 0.5)


# --- bounded budget loops --------------------------------------------------------------------
def test_budget_loops_refuse_non_finite_costs_instead_of_spinning(space):
    table = mac_table(space)
    key = next(k for k in table.entries if k.startswith("block:"))
    table.entries[key] = Measurement(math.nan, math.nan, math.nan, math.nan, 0.0, 1)  # bypasses the loader
    predictor = LatencyPredictor(table, space)
    choices = {layer.name: layer.candidates[0] for layer in space.layers}
    uniform = [[0.0] * len(layer.candidates) for layer in space.layers]
    for fit in (fill_budget, repair_to_budget):
        start = time.perf_counter()
        with pytest.raises(BudgetError, match="non-finite"):
            fit(space, predictor, choices, uniform, 1.0)
        assert time.perf_counter() - start < 5
