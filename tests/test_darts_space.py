"""Spaces darts, darts_small, darts_tiny: the DARTS / NASNet cell pair in DARTS's CIFAR network. The
network has DARTS's parameter count for DARTS-V2; genotypes convert to and from choices; the LUT
lists each cell's ops at their real shapes; the CLI imports, shows, summarises, profiles and
predicts; hwnas.core.edges gives a supernet the edges, their ops and DARTS's discretisation."""

import json
import random

import pytest
import torch

from hwnas.cli import main
from hwnas.core.arch import Arch, load_arch, save_arch
from hwnas.core.darts import DARTS_OPS, Genotype, cell_plans, darts_op, parse_genotype
from hwnas.core.edges import CellEdge, derive_choices, edge_module, edges
from hwnas.core.models import arch_model
from hwnas.core.presets import DARTS_V2, get_preset
from hwnas.core.spaces import get_space
from hwnas.core.spaces.darts import DartsSpace
from hwnas.core.summary import summarize
from hwnas.errors import ArchError, SpaceError
from hwnas.latency_tables import LatencyTable, OpKey
from hwnas.latency_tables.predictor import LatencyPredictor

torch.set_num_threads(1)

DARTS_V2_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                 "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
                 "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
                 "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
                 "('max_pool_3x3', 1)], reduce_concat=range(2, 6))")
ALL_NONE = Genotype([("none", 0), ("none", 1)] * 4, (2, 3, 4, 5), [("none", 0), ("none", 1)] * 4, (2, 3, 4, 5))


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


# --- the network --------------------------------------------------------------------------------
def test_darts_v2_has_darts_parameter_count():
    # DARTS's own cnn/model.py NetworkCIFAR(36, 10, 20, auxiliary=False, DARTS_V2): 3,349,342 (the paper's 3.3M)
    model = arch_model(get_preset("darts_v2"))
    assert n_params(model) == 3_349_342
    assert summarize(model, 32).macs == 528_359_040


def test_layout_reduces_at_a_third_and_two_thirds_of_the_depth():
    plans = cell_plans(36, 20, 32)
    assert [p.index for p in plans if p.reduction] == [6, 13]
    assert [p.index for p in plans if p.reduction_prev] == [7, 14]
    assert (plans[0].c_prev_prev, plans[0].c_prev, plans[0].channels) == (108, 108, 36)
    assert (plans[6].channels, plans[6].hw_prev, plans[6].hw_out) == (72, 32, 16)
    assert (plans[-1].out_chs, plans[-1].hw_out) == (576, 8)
    space = get_space("darts_tiny")
    assert (space.channels, space.cells, [p.index for p in space.plans if p.reduction]) == (4, 5, [1, 3])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("resolution", [32, 16])
def test_sampled_networks_run(seed, resolution):
    space = get_space("darts_tiny", resolution=resolution)
    arch = Arch.create(space, space.sample(random.Random(seed)))
    model = space.build_model(arch.choice_map).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, resolution, resolution)).shape == (2, 10)


def test_all_none_cells_output_zeros_and_state_dict_uses_darts_names():
    space = get_space("darts_tiny")
    model = space.build_model(ALL_NONE.to_choices()).eval()
    plan = space.plans[1]
    with torch.inference_mode():
        out = model.cells[1](torch.randn(1, plan.c_prev_prev, 32, 32), torch.randn(1, plan.c_prev, 32, 32))
    assert torch.equal(out, torch.zeros(1, plan.out_chs, 16, 16))
    keys = set(arch_model(get_preset("darts_v2")).state_dict())
    assert {"stem.0.weight", "cells.0.preprocess0.op.1.weight", "cells.7.preprocess0.conv_1.weight",
            "cells.0._ops.0.op.1.weight", "cells.19._ops.7.op.2.weight", "classifier.weight"} <= keys


# --- the genotype -------------------------------------------------------------------------------
def test_genotype_round_trips_through_choices_and_darts_spelling():
    assert parse_genotype(DARTS_V2_TEXT) == DARTS_V2
    assert parse_genotype(str(DARTS_V2)) == DARTS_V2
    canonical = Genotype.from_choices(DARTS_V2.to_choices())
    assert canonical == DARTS_V2.canonical() and canonical.hash == DARTS_V2.hash
    assert canonical.node("normal", 4) == (("skip_connect", 0), ("sep_conv_3x3", 1))  # ordered by input
    space, rng = get_space("darts"), random.Random(0)
    for _ in range(200):
        choices = space.sample(rng)
        assert Genotype.from_choices(choices).to_choices() == choices
    assert len(space.decisions) == 22 and space.log10_size() == pytest.approx(18.96, abs=0.01)


@pytest.mark.parametrize("text, message", [
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 0)] * 4, normal_concat=[2, 3, 4, 5], "
     "reduce=[], reduce_concat=[2, 3, 4, 5])", "not a literal list"),
    (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 0)"), "node 5 takes state 0 twice"),
    (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "node 5 takes input 5"),
    (DARTS_V2_TEXT.replace("dil_conv_3x3", "conv_7x1_1x7"), "op 'conv_7x1_1x7' is not one of"),
    (DARTS_V2_TEXT.replace("range(2, 6)", "[4, 5]"), "reduce_concat is [4, 5]"),
    ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", "is not a DARTS genotype"),
])
def test_malformed_genotypes_are_refused_in_one_line(text, message, tmp_path, capsys):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_genotype(text)
    code, _, err = run_cli(["arch", "import", "--format", "darts", text, "--out", str(tmp_path / "a.json")], capsys)
    assert code == 2 and err.startswith("hwnas: error:") and "\n" not in err and message in err
    assert not (tmp_path / "a.json").exists()


# --- the CLI ------------------------------------------------------------------------------------
def test_arch_import_show_summary_and_presets(tmp_path, capsys):
    path = tmp_path / "v2.json"
    code, out, _ = run_cli(["arch", "import", "--format", "darts", DARTS_V2_TEXT, "--out", str(path)], capsys)
    assert code == 0 and load_arch(path) == get_preset("darts_v2")
    code, out, _ = run_cli(["arch", "show", str(path)], capsys)
    doc = json.loads(out)
    assert code == 0 and (doc["channels"], doc["cells"]) == (36, 20) and parse_genotype(doc["genotype"]).hash == DARTS_V2.hash
    assert doc["normal"][3] == "node 5 = skip_connect(state 0) + dil_conv_3x3(state 2)"
    code, out, _ = run_cli(["arch", "summary", "preset:darts_v2", "--json"], capsys)
    assert code == 0 and json.loads(out)["params"] == 3_349_342
    code, out, _ = run_cli(["presets"], capsys)
    assert code == 0 and "preset:darts_v2" in out
    code, _, err = run_cli(["arch", "import", "--format", "darts", DARTS_V2_TEXT, "--space", "nb201",
                            "--out", str(tmp_path / "b.json")], capsys)
    assert code == 2 and "not a DARTS space" in err


# --- the latency table --------------------------------------------------------------------------
def test_arch_ops_are_stem_preprocessing_and_edge_ops_per_cell_and_head():
    space = get_space("darts_tiny")
    arch = Arch.create(space, DARTS_V2.to_choices())
    ops = arch.ops(space)
    assert [op.label for op in ops[:4]] == [
        "stem:c12_k3_s1@3x32x32", "block:darts_relu_conv_bn_c4_s1@12x32x32", "block:darts_relu_conv_bn_c4_s1@12x32x32",
        "block:darts_sep_conv_3x3_c4_s1@4x32x32"]
    cell1 = ops[1 + 10:1 + 20]  # cell 1 reduces: its edges from states 0, 1 have stride 2
    assert cell1[2].label == "block:darts_max_pool_3x3_c8_s2@8x32x32"
    assert "block:darts_skip_connect_c8_s1@8x16x16" in [op.label for op in cell1]
    assert ops[1 + 20 + 0].label == "block:darts_factorized_reduce_c8_s2@16x32x32"  # cell 2: c_{k-2} is cell 0
    assert ops[-1].label == "head:f64_n10@64x8x8" and len(ops) == 1 + 5 * (2 + 8) + 1
    none_ops = Arch.create(space, ALL_NONE.to_choices()).ops(space)
    assert len(none_ops) == 1 + 5 * 2 + 1
    all_ops = set(space.all_ops())
    assert set(ops) <= all_ops and set(none_ops) <= all_ops
    for op in all_ops:
        key = OpKey.for_op(op, space.build_config.name)
        assert OpKey.parse(key.text) == key and key.spec == op.spec and key.build == "darts"


def test_profile_then_predict(tmp_path, capsys):
    lut = tmp_path / "darts.json"
    code, out, err = run_cli(["profile", "--space", "darts_tiny", "--resolution", "16", "--backend", "torch-cpu",
                              "--out", str(lut), "--quick", "--no-progress"], capsys)
    assert code == 0, err
    table, space = LatencyTable.load(lut), get_space("darts_tiny", resolution=16)
    assert len(table) == len(space.all_ops()) and table.spaces == ["darts_tiny"]
    predictor = LatencyPredictor(table, space)
    arch = Arch.create(space, space.sample(random.Random(5)))
    assert predictor.raw_sum_ms(arch) == pytest.approx(sum(predictor.op_latency_ms(op) for op in arch.ops(space)))
    assert predictor.predict(arch).params == n_params(space.build_model(arch.choice_map))
    save_arch(arch, tmp_path / "a.json")
    code, out, err = run_cli(["predict", str(tmp_path / "a.json"), "--lut", str(lut), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["latency_ms"] > 0


# --- edges for a supernet -----------------------------------------------------------------------
def test_edges_and_their_modules():
    nb201, space = get_space("nb201"), get_space("darts_tiny")
    assert [(e.to, e.source, e.decision) for e in edges(nb201)][:2] == [(1, 0, "edge_1_0"), (2, 0, "edge_2_0")]
    assert len(edges(nb201)) == 6 and len(edges(space)) == 28 and all(e.ops == DARTS_OPS for e in edges(space))
    assert n_params(edge_module(space, "sep_conv_3x3", 8, 2)) == n_params(darts_op("sep_conv_3x3", 8, 2))
    x = torch.randn(1, 8, 16, 16)
    assert edge_module(space, "skip_connect", 8, 2)(x).shape == (1, 8, 8, 8)
    assert edge_module(nb201, "nor_conv_3x3", 16)(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)
    with pytest.raises(SpaceError, match="not a cell space"):
        edges(get_space("tiny"))


def test_derive_choices_is_darts_discretisation():
    space = get_space("darts")
    # weights that favour DARTS-V2's pairs: 0.9 on its op on its edges, 0.5 on `none` everywhere
    wanted = {(cell, node, source): op for cell in ("normal", "reduce") for node in (2, 3, 4, 5)
              for op, source in DARTS_V2.node(cell, node)}
    weights = {}
    for edge in edges(space):
        op = wanted.get((edge.cell, edge.to, edge.source))
        weights[edge] = [0.5 if o == "none" else 0.9 if o == op else 0.1 for o in edge.ops]
    assert derive_choices(space, weights) == DARTS_V2.to_choices()
    nb201 = get_space("nb201")
    picks = derive_choices(nb201, {e: [1.0 if o == "none" else 0.0 for o in e.ops] for e in edges(nb201)})
    assert set(picks.values()) == {"none"}  # nb201 keeps `none` as a choice
    with pytest.raises(SpaceError, match="no weights for edge"):
        derive_choices(space, {})
    assert isinstance(edges(space)[0], CellEdge) and isinstance(space, DartsSpace)
