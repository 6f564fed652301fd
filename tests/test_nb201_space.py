"""Space nb201: NAS-Bench-201's cell in NB201's own network. The network matches the benchmark's
published sizes; the string codec round-trips; the LUT lists its ops; the CLI imports, shows,
summarises, profiles, predicts and trains it."""

import json
import random

import pytest
import torch

from hwnas.core.arch import Arch, load_arch, save_arch
from hwnas.cli import main
from hwnas.errors import ArchError, LutError, SpaceError
from hwnas.latency_tables import LatencyTable, OpKey
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.core.models import arch_backbone, arch_model
from hwnas.core.spaces import get_space
from hwnas.core.spaces.nb201 import EDGES, NB201_OPS, nb201_string, parse_nb201_string
from hwnas.core.summary import summarize

torch.set_num_threads(1)

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
MIXED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"


def nb201_arch(text: str, **space_args) -> tuple[Arch, object]:
    space = get_space("nb201", **space_args)
    return Arch.create(space, parse_nb201_string(text)), space


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


# --- the network --------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", [ALL_CONV3, RESNET, ALL_NONE, ALL_SKIP, MIXED])
@pytest.mark.parametrize("resolution, classes", [(32, 10), (16, 120)])
def test_network_runs_at_cifar_and_imagenet16_shapes(cell, resolution, classes):
    arch, _ = nb201_arch(cell, resolution=resolution, num_classes=classes)
    model = arch_model(arch, num_classes=classes).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, resolution, resolution)).shape == (2, classes)


# NB201's published cost_info (params in M, FLOPs in M; CIFAR-10 and -100 at 32x32): the
# all-conv3x3 cell is the space's largest network, an all-none (or all-skip) cell its smallest.
# NB201's FLOPs are multiply-accumulates with the classifier's bias counted (one per class).
@pytest.mark.parametrize("cell, classes, params, mflops", [
    (ALL_CONV3, 10, 1_531_546, 220.11969),
    (ALL_CONV3, 100, 1_537_396, 220.12554),
    (ALL_NONE, 10, 73_306, 7.78305),
    (ALL_NONE, 100, 79_156, 7.7889),
    (ALL_SKIP, 10, 73_306, 7.78305),
    (RESNET, 10, 559_386, 78.56193),
])
def test_params_and_flops_equal_nb201_published(cell, classes, params, mflops):
    arch, space = nb201_arch(cell, num_classes=classes)
    summary = summarize(arch_model(arch, num_classes=classes), 32)
    assert summary.params == params
    assert summary.macs + classes == round(mflops * 1e6)


def test_state_dict_uses_nb201_names():
    arch, _ = nb201_arch(RESNET)
    keys = set(arch_model(arch).state_dict())
    assert {"stem.0.weight", "stem.1.weight", "cells.0.layers.0.op.1.weight", "cells.5.conv_a.op.1.weight",
            "cells.5.downsample.1.weight", "lastact.0.weight", "classifier.weight"} <= keys
    assert len([k for k in keys if k.startswith("cells.")]) > 0 and "cells.0.layers.1.op.1.weight" not in keys


def test_all_none_cell_outputs_zeros_so_logits_ignore_the_input():
    arch, _ = nb201_arch(ALL_NONE)
    model = arch_model(arch).eval()
    with torch.inference_mode():
        a, b = model(torch.randn(1, 3, 32, 32)), model(torch.randn(1, 3, 32, 32))
        assert torch.equal(model.cells[0](torch.randn(1, 16, 32, 32)), torch.zeros(1, 16, 32, 32))
    assert torch.equal(a, b)


def test_nb201_has_no_timm_arch_def_or_backbone():
    arch, space = nb201_arch(RESNET)
    for call in (lambda: arch.arch_def(space), lambda: arch_backbone(arch)):
        with pytest.raises(SpaceError, match="not a timm arch_def.*use a timm space"):
            call()


# --- the string codec -----------------------------------------------------------------------------
def test_string_round_trips_for_known_and_200_random_cells():
    for text in (ALL_CONV3, RESNET, ALL_NONE, ALL_SKIP, MIXED):
        assert nb201_string(parse_nb201_string(text)) == text
    assert parse_nb201_string(MIXED) == {"edge_1_0": "nor_conv_3x3", "edge_2_0": "nor_conv_3x3",
                                         "edge_2_1": "avg_pool_3x3", "edge_3_0": "skip_connect",
                                         "edge_3_1": "nor_conv_1x1", "edge_3_2": "skip_connect"}
    space, rng = get_space("nb201"), random.Random(0)
    for _ in range(200):
        choices = space.sample(rng)
        assert parse_nb201_string(nb201_string(choices)) == choices
    assert [name for name, _, _ in EDGES] == list(space.decision_names)
    assert space.log10_size() == pytest.approx(6 * 0.69897, abs=1e-4)  # 5**6 = 15,625 cells


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", "not an NB201 string of 3 nodes"),
    ("nor_conv_3x3~0+none~0|nor_conv_3x3~1+skip_connect~0|none~1|skip_connect~2", "not an NB201 string of 3 nodes"),
    ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|skip_connect~2|", "node 2 needs 2 input edge"),
    ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~0|+|skip_connect~0|none~1|skip_connect~2|", "must come from node 1"),
    ("|conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|", "op 'conv_3x3' is not one of"),
])
def test_malformed_strings_are_refused_in_one_line(text, message, tmp_path, capsys):
    with pytest.raises(ArchError, match=message):
        parse_nb201_string(text)
    code, _, err = run_cli(["arch", "import", "--format", "nb201", text, "--out", str(tmp_path / "a.json")], capsys)
    assert code == 2 and err.startswith("hwnas: error:") and "\n" not in err and message in err
    assert not (tmp_path / "a.json").exists()


# --- the CLI --------------------------------------------------------------------------------------
def test_arch_import_show_and_summary(tmp_path, capsys):
    path = tmp_path / "resnet.json"
    code, out, _ = run_cli(["arch", "import", "--format", "nb201", RESNET, "--out", str(path)], capsys)
    assert code == 0 and RESNET in out
    arch = load_arch(path)
    assert arch.space == "nb201" and nb201_string(arch.choice_map) == RESNET

    code, out, _ = run_cli(["arch", "show", str(path)], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["nb201_string"] == RESNET and "arch_def" not in doc
    assert doc["cell"] == ["node 1 = nor_conv_3x3(node 0)", "node 2 = nor_conv_3x3(node 1)",
                           "node 3 = skip_connect(node 0) + skip_connect(node 2)"]

    code, out, _ = run_cli(["arch", "summary", str(path), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["nb201_string"] == RESNET and doc["params"] == 559_386 and doc["space"] == "nb201"
    code, out, _ = run_cli(["arch", "summary", str(path)], capsys)
    assert code == 0 and RESNET in out and "559,386" in out

    # an existing --out is kept
    code, _, err = run_cli(["arch", "import", "--format", "nb201", ALL_CONV3, "--out", str(path)], capsys)
    assert code == 2 and "--force" in err


def test_space_show_and_sample(tmp_path, capsys):
    code, out, _ = run_cli(["space", "show", "nb201", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["stem_size"] == 16 and doc["num_features"] == 64
    assert [d["name"] for d in doc["decisions"]] == [name for name, _, _ in EDGES]
    assert all(d["choices"] == list(NB201_OPS) for d in doc["decisions"])
    assert doc["unique_ops"] == 16  # stem, 4 edge ops x 3 stages, 2 reductions, head
    code, _, _ = run_cli(["arch", "sample", "--space", "nb201", "--seed", "3", "--out", str(tmp_path / "s.json")], capsys)
    assert code == 0 and load_arch(tmp_path / "s.json").space == "nb201"


# --- the latency table ----------------------------------------------------------------------------
def test_arch_ops_are_stem_edge_ops_per_cell_reductions_and_head():
    arch, space = nb201_arch(RESNET)
    ops = arch.ops(space)
    assert [op.label for op in ops[:4]] == [
        "stem:c16_k3_s1@3x32x32", "block:nb201_nor_conv_3x3_c16@16x32x32", "block:nb201_nor_conv_3x3_c16@16x32x32",
        "block:nb201_skip_connect_c16@16x32x32"]
    assert len(ops) == 1 + 3 * 5 * 4 + 2 + 1  # 4 non-none edges per cell
    assert ops[1 + 5 * 4].label == "block:nb201_resblock_c32@16x32x32"
    assert ops[-1].label == "head:f64_n10@64x8x8"
    none_arch, _ = nb201_arch(ALL_NONE)
    assert [op.spec for op in none_arch.ops(space)] == ["c16_k3_s1", "nb201_resblock_c32", "nb201_resblock_c64", "f64_n10"]
    # every op of every architecture is in the space's op list, and its key has one spelling
    all_ops = set(space.all_ops())
    assert set(ops) <= all_ops and set(none_arch.ops(space)) <= all_ops
    for op in all_ops:
        key = OpKey.for_op(op, space.build_config.name)
        assert OpKey.parse(key.text) == key and key.spec == op.spec and key.build == "nb201"


@pytest.fixture(scope="module")
def nb201_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb201_lut") / "nb201.json"
    assert main(["profile", "--space", "nb201", "--resolution", "16", "--backend", "torch-cpu", "--out", str(out),
                 "--quick", "--no-progress"]) == 0
    return out


def test_profile_then_predict(nb201_table, tmp_path, capsys):
    table = LatencyTable.load(nb201_table)
    space = get_space("nb201", resolution=16)
    assert len(table) == 16 and table.spaces == ["nb201"] and table.resolutions == [16]
    predictor = LatencyPredictor(table, space)  # every op of the space is there
    arch, _ = nb201_arch(MIXED, resolution=16)
    assert predictor.raw_sum_ms(arch) == pytest.approx(sum(predictor.op_latency_ms(op) for op in arch.ops(space)))
    assert predictor.predict(arch).params == sum(p.numel() for p in arch_model(arch).parameters())

    path = tmp_path / "mixed.json"
    save_arch(arch, path)
    code, out, err = run_cli(["predict", str(path), "--lut", str(nb201_table), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["space"] == "nb201" and doc["resolution"] == 16 and doc["latency_ms"] > 0
    # the supernet strategies need a layer-wise space; nb201 is refused with the reason
    with pytest.raises(LutError, match="not layer-wise"):
        predictor.layer_tables()


def test_train_one_epoch_on_digits(tmp_path, capsys):
    arch, _ = nb201_arch(RESNET)
    save_arch(arch, tmp_path / "arch.json")
    out = tmp_path / "run"
    code, text, err = run_cli(["train", str(tmp_path / "arch.json"), "--data", "digits", "--train-resolution", "16",
                               "--epochs", "1", "--max-batches", "2", "--batch-size", "16", "--out", str(out),
                               "--no-progress"], capsys)
    assert code == 0, err
    assert "top-1" in text and json.loads((out / "result.json").read_text())["epochs_done"] == 1
