"""Search spaces: shapes, candidates, and every candidate op builds and runs at its shape."""

import math

import pytest
import torch

from hwnas.core.build import build_block
from hwnas.errors import SpaceError
from hwnas.profilers.session import op_module as session_op_module
from hwnas.core.spaces import SKIP, SPACES, get_space


def op_module(space, op):
    return session_op_module(op, space.build_config).eval()


def run_op(space, op):
    module = op_module(space, op)
    with torch.inference_mode():
        return module(torch.randn(op.input_shape(1)))


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_op_of_every_space_runs_at_its_concrete_shape(name):
    # mnasnet has >1000 unique ops at 224; at 64 it has the same ops at smaller shapes
    space = get_space(name, resolution=64 if name == "mnasnet" else None)
    ops = space.all_ops()
    assert len(ops) == len(set(ops)), "ops are deduplicated"
    for op in ops:
        out = run_op(space, op)
        if op.kind == "head":
            assert out.shape == (1, space.num_classes)
        else:
            assert out.shape == (1, op.out_chs(), *op.out_hw()), op.label


def test_fbnet_macro_architecture():
    space = get_space("fbnet")
    assert len(space.layers) == 22
    assert [(l.out_chs, l.stride) for l in space.layers[:2]] == [(16, 1), (24, 2)]
    assert space.layers[0].in_chs == 16 and space.layers[0].in_hw == 112
    assert space.layers[-1].out_chs == 352 and space.layers[-1].in_hw == 7
    assert space.build_config.num_features == 1984
    full = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", SKIP)
    for layer in space.layers:
        shape_preserving = layer.stride == 1 and layer.in_chs == layer.out_chs
        assert layer.candidates == (full if shape_preserving else full[:-1])
    assert math.isclose(space.log10_size(), sum(math.log10(len(l.candidates)) for l in space.layers))


def test_fbnet_dedups_identical_shapes():
    space = get_space("fbnet")
    blocks = space.candidate_blocks()
    # layers 2-4 of a stage share one input shape, so they share ops
    assert len(blocks) < sum(len(l.candidates) for l in space.layers)
    assert len(blocks) == len({(b.spec, b.in_chs, b.in_h) for b in blocks})


def test_grouped_candidate_uses_grouped_pointwise_convs_and_shuffle():
    space = get_space("tiny")
    layer = space.layers[2]
    block = build_block(layer.block_string("k3_e1_g2"), layer.in_chs, space.build_config)
    assert block.conv_pw.groups == 2 and block.conv_pwl.groups == 2
    x = torch.randn(1, 16, 8, 8)
    block.eval()
    assert block(x).shape == x.shape


def test_mnasnet_widths_hold_published_ones():
    space = get_space("mnasnet")
    assert space.decision("s4.width").choices == ("72", "96", "112", "120")
    assert space.decision("s5.width").choices == ("120", "160", "192", "200")
    assert space.decision("s1.depth").choices == ("1", "2", "3")
    assert space.decision("s0.depth").choices == ("1", "2")


def test_mobilenetv3_depth_and_layer_choices():
    space = get_space("mobilenetv3")
    choices = space.sample(__import__("random").Random(0))
    choices.update({f"s{i}.depth": "2" for i in range(1, 6)})
    arch_def = space.arch_def(choices)
    assert [len(s) for s in arch_def] == [1, 2, 2, 2, 2, 2]
    assert arch_def[1][0].endswith("_nre") and arch_def[5][0].endswith("_se0.25_nhs")


def test_resolution_changes_shapes():
    small = get_space("fbnet", resolution=128)
    assert small.layers[0].in_hw == 64 and small.layers[-1].in_hw == 4


@pytest.mark.parametrize("bad", [0, 100, 16])
def test_bad_resolution_is_a_space_error(bad):
    with pytest.raises(SpaceError, match="multiple of 32"):
        get_space("fbnet", resolution=bad)


def test_unknown_space_names_the_known_ones():
    with pytest.raises(SpaceError, match="fbnet, fbnet_cifar100, mnasnet, mobilenetv3, mobilenetv3_w12, nb201, proxylessnas, tiny"):
        get_space("resnet")
