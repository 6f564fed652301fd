"""HW-NAS-Bench's FBNet space on CIFAR-100 (`fbnet_cifar100`), its op-index architectures, its
published per-layer latency tables (`lut import --format hwnasbench`) and batch prediction.

The exactness checks take HW-NAS-Bench's own numbers: the query results its notebook prints
(`hwnasbench_notebook_values.json`) and its additive model (base + each chosen op's delta, summed
here straight from the CSV files), and assert that our predictor gives the same figure."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from hwnas.core.arch import Arch, load_arch, save_arch
from hwnas.cli import main
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.profilers.table import LatencyTable
from hwnas.core.spaces import SKIP, get_space
from hwnas.core.spaces.fbnet_cifar import FBNET_ABC, OPS

from lut_fixtures import mac_table

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nasbench" / "fbnet_hwnasbench"
DEVICES = {"raspi4": "Raspberry Pi 4", "pixel3": "Google Pixel 3", "eyeriss": "Eyeriss"}
SHAPE_CHANGING = (1, 5, 9, 13, 17, 21)


def _space():
    return get_space("fbnet_cifar100")


def _arch(indices) -> Arch:
    space = _space()
    return Arch.create(space, space.choices_from_indices(indices))


# --- the space ------------------------------------------------------------------------------------
def test_layout_is_hwnasbenchs_fbnet_at_32px():
    space = _space()
    assert (space.resolution, space.num_classes) == (32, 100)
    assert space.stem_op().spec == "c16_k3_s1"
    assert space.build_config.num_features == 1504
    assert [layer.name for layer in space.layers] == [f"layer{i}" for i in range(22)]
    assert [layer.out_chs for layer in space.layers] == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    assert [i for i, layer in enumerate(space.layers) if layer.stride == 2] == [5, 9, 17]
    assert [layer.in_hw for layer in space.layers] == [32] * 6 + [16] * 4 + [8] * 8 + [4] * 4
    # HW-NAS-Bench offers all 9 ops at every layer; skip is a projection where the shape changes
    assert all(layer.candidates == OPS for layer in space.layers)
    assert [i for i, layer in enumerate(space.layers) if layer.projection_skip] == list(SHAPE_CHANGING)
    assert space.layers[5].block_string(SKIP) == "cn_r1_k1_s2_c32"
    assert space.layers[2].block_string(SKIP) is None


def _hwnasbench_params(indices) -> int:
    """Parameters of HW-NAS-Bench's FBNet_Infer (hw_nas_bench_api/fbnet_models/model_infer.py), by
    its layer definitions: bias-free convs, BN (2 per channel), FC with bias; ConvBlock = 1x1 conv
    (groups g) C_in -> C_in*e, depthwise kxk, 1x1 conv (groups g) -> C_out; Skip = identity, or a
    1x1 conv + BN where the shape changes."""
    space = _space()
    n = 3 * 16 * 9 + 2 * 16
    for layer, i in zip(space.layers, indices):
        op, cin, cout = OPS[i], layer.in_chs, layer.out_chs
        if op == SKIP:
            n += cin * cout + 2 * cout if (cin != cout or layer.stride != 1) else 0
            continue
        k, e, g = int(op[1]), int(op.split("_")[1][1:]), 2 if op.endswith("_g2") else 1
        mid = cin * e
        n += cin * mid // g + 2 * mid + k * k * mid + 2 * mid + mid * cout // g + 2 * cout
    return n + 352 * 1504 + 2 * 1504 + 1504 * 100 + 100


RANDOM = [[rng.randrange(9) for _ in range(22)] for rng in map(random.Random, range(3))]


@pytest.mark.parametrize("indices", [*FBNET_ABC.values(), [8] * 22, [0] * 22, [7] * 22, *RANDOM])
def test_network_has_hwnasbenchs_parameter_count_and_runs(indices):
    arch = _arch(indices)
    model = _space().build_model(arch.choice_map).eval()
    assert sum(p.numel() for p in model.parameters()) == _hwnasbench_params(indices)
    assert model.conv_stem.stride == (1, 1)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_grouped_ops_have_grouped_pointwise_convs_and_a_shuffle():
    model = _space().build_model(_arch([1] * 22).choice_map)
    block = model.blocks[0][0]
    assert block.conv_pw.groups == 2 and block.conv_pwl.groups == 2 and block.shuffle.groups == 2


# --- op-index import ------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["8 2 0 8 8 7 2 4 2 7 6 5 7 3 5 6 1 7 7 6 7 7",
                                  "[8, 2, 0, 8, 8, 7, 2, 4, 2, 7, 6, 5, 7, 3, 5, 6, 1, 7, 7, 6, 7, 7]"])
def test_op_indices_import(tmp_path, text, capsys):
    out = tmp_path / "a.json"
    assert main(["arch", "import", text, "--format", "op-indices", "--out", str(out)]) == 0
    arch = load_arch(out)
    assert arch == _arch(FBNET_ABC["fbnet_a"])
    assert arch.choice_map["layer0"] == SKIP and arch.choice_map["layer16"] == "k3_e1_g2"
    assert "8 2 0 8 8" in capsys.readouterr().out


@pytest.mark.parametrize("text, says", [
    ("8 2 0", "has 3 op indices; HW-NAS-Bench's FBNet needs 22"),
    ("8 2 9 " + "0 " * 19, "op index '9'"),
    ("8 2 -1 " + "0 " * 19, "op index '-1'"),
    ("8 x 0 " + "0 " * 19, "op index 'x'"),
    ("", "has 0 op indices"),
])
def test_malformed_op_indices_are_one_line_errors_and_write_nothing(tmp_path, capsys, text, says):
    out = tmp_path / "a.json"
    assert main(["arch", "import", text, "--format", "op-indices", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and "\n" not in err and says in err and "write e.g." in err
    assert not out.exists()


# --- the published tables -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """The three HW-NAS-Bench tables imported with the CLI, once."""
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent (it lies beside the repository on project machines)")
    out = tmp_path_factory.mktemp("hwnasbench")
    paths = {}
    for device in DEVICES:
        paths[device] = out / f"{device}.json"
        assert main(["lut", "import", str(DATA / f"fbnet_lut_{device}_cifar100_wide.csv"), "--format", "hwnasbench",
                     "--out", str(paths[device])]) == 0
    return paths


def _hwnasbench_sum(device: str, indices) -> float:
    """HW-NAS-Bench's additive model straight from its files: base + each layer's chosen delta."""
    with (DATA / "base_all_k3_e1.csv").open() as handle:
        base = {row["device"]: float(row["base_all_k3_e1_ms"]) for row in csv.DictReader(handle)}[device]
    with (DATA / f"fbnet_lut_{device}_cifar100_wide.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return base + sum(float(rows[layer][OPS[i]]) for layer, i in enumerate(indices))


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_every_notebook_architecture_predicts_hwnasbenchs_value(tables, device):
    table = LatencyTable.load(tables[device])
    predictor = LatencyPredictor(table, _space())
    notebook = json.loads((DATA / "hwnasbench_notebook_values.json").read_text())["fbnet"]
    assert len(notebook) >= 3
    for key, values in notebook.items():
        predicted = predictor.predict(_arch(json.loads(key)))
        assert predicted.latency_ms == pytest.approx(values["cifar100"][f"{device}_latency"], abs=1e-4), key


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_any_architecture_sums_as_hwnasbench_and_no_entry_is_negative(tables, device):
    table = LatencyTable.load(tables[device])
    assert table.backend == "published" and table.device["name"] == DEVICES[device]
    assert len(table.entries) == len(_space().all_ops())
    assert min(m.p50_ms for m in table.entries.values()) >= 0.0
    predictor = LatencyPredictor(table, _space())
    rng = random.Random(7)
    archs = [list(v) for v in FBNET_ABC.values()] + [[8] * 22, [7] * 22]
    archs += [[rng.randrange(9) for _ in range(22)] for _ in range(300)]
    worst = max(abs(predictor.predict(_arch(a)).latency_ms - _hwnasbench_sum(device, a)) for a in archs)
    assert worst < 1e-5
    # the fastest and slowest architectures are HW-NAS-Bench's too (per-layer minima and maxima)
    low, high = predictor.latency_range()
    assert low == pytest.approx(_hwnasbench_sum(device, [8] * 22), abs=1e-5)
    assert high >= _hwnasbench_sum(device, [7] * 22) - 1e-5


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_helps_5000_architectures_predict_helps_hwnasbench_columns(tables, device):
    """HELP's raspi4/pixel3/eyeriss columns are HW-NAS-Bench's figures of its 5,000 architectures."""
    path = DATA.parent / "help_fbnet" / "fbnet_cifar_5000archs_latency.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5000
    predictor = LatencyPredictor(LatencyTable.load(tables[device]), _space())
    worst = max(abs(predictor.predict(_arch(map(int, row["op_idx_list"].split()))).latency_ms - float(row[device]))
                for row in rows)
    assert worst < 1e-5


def test_fbnet_abc_import_and_predict_on_each_device(tables, tmp_path, capsys):
    for name, indices in FBNET_ABC.items():
        out = tmp_path / f"{name}.json"
        assert main(["arch", "import", " ".join(map(str, indices)), "--format", "op-indices", "--out", str(out)]) == 0
        for device in DEVICES:
            capsys.readouterr()
            assert main(["predict", "--lut", str(tables[device]), str(out), "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert doc["space"] == "fbnet_cifar100" and doc["error_pct"] is None and doc["params"] > 2_000_000
            assert doc["latency_ms"] == pytest.approx(_hwnasbench_sum(device, indices), abs=1e-5)
    # the human line states a published table's error as unknown, with no advice to profile
    assert main(["predict", "--lut", str(tables["raspi4"]), str(tmp_path / "fbnet_c.json")]) == 0
    text = capsys.readouterr().out
    assert "error unknown" in text and "Raspberry Pi 4" in text and "hwnas profile" not in text


def test_another_class_count_is_refused_naming_the_published_one(tables, tmp_path, capsys):
    arch = tmp_path / "a.json"
    save_arch(_arch([0] * 22), arch)
    assert main(["predict", "--lut", str(tables["pixel3"]), str(arch), "--num-classes", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "100-class head only" in err and "--num-classes 100" in err and "\n" not in err


def _copy_data(tmp_path: Path) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data folder {DATA} is absent")
    folder = tmp_path / "src"
    shutil.copytree(DATA, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def _edit(path: Path, line: int, column: int, value: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit, says", [
    (lambda d: _edit(d / "fbnet_lut_raspi4_cifar100_wide.csv", 5, 3, "abc"), "line 5 (layer 3) has k3_e3 'abc'"),
    (lambda d: _edit(d / "fbnet_lut_raspi4_cifar100_wide.csv", 4, 9, "nan"), "line 4 (layer 2) has skip 'nan'"),
    (lambda d: _edit(d / "fbnet_lut_raspi4_cifar100_wide.csv", 3, 1, "0.1"), "k3_e1 '0.1'"),
    (lambda d: _edit(d / "fbnet_lut_raspi4_cifar100_wide.csv", 4, 9, "0.5"), "layer 2's skip"),
    (lambda d: _edit(d / "fbnet_lut_raspi4_cifar100_wide.csv", 5, 4, "0.9"), "layers 3 and 4 hold the same op (block:ir_r1_k3_s1_e6_c24@24x32x32)"),
    (lambda d: _edit(d / "base_all_k3_e1.csv", 4, 1, "inf"), "base_all_k3_e1_ms 'inf'"),
    (lambda d: (d / "base_all_k3_e1.csv").unlink(), "base_all_k3_e1.csv is missing"),
    (lambda d: (d / "fbnet_lut_raspi4_cifar100_wide.csv").write_text("layer,k3_e1\n0,0\n"), "the header is not"),
])
def test_bad_hwnasbench_files_are_one_line_errors_naming_file_and_row(tmp_path, capsys, edit, says):
    folder = _copy_data(tmp_path)
    edit(folder)
    out = tmp_path / "t.json"
    assert main(["lut", "import", str(folder / "fbnet_lut_raspi4_cifar100_wide.csv"), "--format", "hwnasbench",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and "\n" not in err and says in err, err
    assert not out.exists()


def test_a_renamed_file_or_several_devices_are_refused(tmp_path, capsys):
    folder = _copy_data(tmp_path)
    renamed = folder / "raspi.csv"
    shutil.copy(folder / "fbnet_lut_raspi4_cifar100_wide.csv", renamed)
    out = tmp_path / "t.json"
    assert main(["lut", "import", str(renamed), "--format", "hwnasbench", "--out", str(out)]) == 2
    assert "keep the original file name" in capsys.readouterr().err
    assert main(["lut", "import", *(str(folder / f"fbnet_lut_{d}_cifar100_wide.csv") for d in ("raspi4", "pixel3")),
                 "--format", "hwnasbench", "--out", str(out)]) == 2
    assert "import them one at a time" in capsys.readouterr().err
    assert not out.exists()


# --- batch prediction -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mac_lut(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch") / "macs.json"
    mac_table(_space()).save(path)
    return path


def _jsonl(path: Path, archs) -> Path:
    path.write_text("".join(json.dumps(a.to_dict()) + "\n" for a in archs))
    return path


def test_batch_predict_prints_json_lines_in_input_order(mac_lut, tmp_path, capsys):
    space = _space()
    rng = random.Random(3)
    listed = [Arch.create(space, space.sample(rng)) for _ in range(40)]
    jsonl = _jsonl(tmp_path / "list.jsonl", listed)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    save_arch(_arch(FBNET_ABC["fbnet_b"]), first)
    save_arch(_arch(FBNET_ABC["fbnet_a"]), second)
    assert main(["predict", "--lut", str(mac_lut), str(first), str(second), "--archs-file", str(jsonl), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [json.loads(line) for line in lines]
    expected = [_arch(FBNET_ABC["fbnet_b"]), _arch(FBNET_ABC["fbnet_a"]), *listed]
    assert [d["arch"] for d in docs] == [a.hash for a in expected]
    assert [d["input"] for d in docs[:3]] == [str(first), str(second), f"{jsonl}:1"]
    # each line is what a single --json prediction says of that architecture
    assert main(["predict", "--lut", str(mac_lut), str(second), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert {**single, "input": str(second)} == docs[1]
    assert all({"latency_ms", "raw_sum_ms", "params", "peak_activation_bytes", "error_pct"} <= set(d) for d in docs)


def test_single_arch_human_output_is_unchanged(mac_lut, tmp_path, capsys):
    arch = tmp_path / "a.json"
    save_arch(_arch(FBNET_ABC["fbnet_c"]), arch)
    assert main(["predict", "--lut", str(mac_lut), str(arch)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{arch} on test-macs at 32px, 100 classes: ") and out[1].startswith("  raw LUT sum ")


@pytest.mark.parametrize("line, says", [
    ("{not json", "line 3: not JSON"),
    ('{"space": "fbnet_cifar100", "choices": {"layer0": "k3_e1"}}', "line 3: missing decision 'layer1'"),
    (json.dumps({"space": "fbnet_cifar100", "choices": {f"layer{i}": "k9" for i in range(22)}}),
     "line 3: choice 'k9' for decision 'layer0'"),
    ('[1, 2]', "line 3: expected a JSON object"),
    (json.dumps(Arch.create(get_space("tiny"), {"layer0": "skip", "layer1": "k3_e1", "layer2": "k3_e3"}).to_dict()),
     "line 3: architecture is of space 'tiny'"),
])
def test_a_bad_jsonl_line_names_file_and_line_and_prints_nothing(mac_lut, tmp_path, capsys, line, says):
    good = json.dumps(_arch([0] * 22).to_dict())
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(f"{good}\n\n{line}\n{good}\n")
    assert main(["predict", "--lut", str(mac_lut), "--archs-file", str(jsonl), "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith(f"hwnas: error: {jsonl}") and "\n" not in err and says in err, err


@pytest.mark.parametrize("argv, says", [
    (["--archs-file", "LIST"], "pass --json"),
    (["--json"], "name an architecture to predict"),
    (["--archs-file", "missing.jsonl", "--json"], "cannot read it"),
])
def test_batch_usage_errors(mac_lut, tmp_path, capsys, argv, says):
    argv = [str(_jsonl(tmp_path / "l.jsonl", [_arch([0] * 22)])) if a == "LIST" else a for a in argv]
    assert main(["predict", "--lut", str(mac_lut), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: ") and says in err and "\n" not in err
