"""The single-path supernet of the cell spaces (nb201, darts) and the shared (SPOS) evaluator on them:
a path computes exactly what the architecture's own network computes with the same weights; the
evaluator trains, recalibrates and scores nb201 and darts cells."""

import dataclasses
import random

import pytest
import torch
from torch.utils.data import Subset

from hwnas.core.arch import Arch
from hwnas.core.cells import CELL_EDGES, InferCell
from hwnas.core.spaces import get_space
from hwnas.core.spaces.nb201 import parse_nb201_string
from hwnas.errors import HwnasError
from hwnas.search.cell_supernet import CellSupernet
from hwnas.search.spos import SharedEvaluator, SPOSConfig, path_indices
from hwnas.search.evaluators import holdout_data
from hwnas.train.data import dataset_labels, load_data

torch.set_num_threads(1)

MIXED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"


def copy_nb201_path(net, supernet, arch):
    """Load the path's weights into the discrete NB201 network."""
    choices = arch.choice_map
    net.stem.load_state_dict(supernet.stem.state_dict())
    for mine, theirs in zip(net.cells, supernet.cells):
        if isinstance(mine, InferCell):
            for k, (j, i) in enumerate(CELL_EDGES):
                ops = theirs.mixed.ops
                mine.layers[k].load_state_dict(theirs.mixed.edges[f"{j}_{i}"][ops.index(choices[f"edge_{j}_{i}"])].state_dict())
        else:
            mine.load_state_dict(theirs.state_dict())
    net.lastact.load_state_dict(supernet.head.lastact.state_dict())
    net.classifier.load_state_dict(supernet.head.classifier.state_dict())


def copy_darts_path(net, supernet, space, arch):
    genotype = space.genotype(arch.choice_map)
    net.stem.load_state_dict(supernet.net.stem.state_dict())
    net.classifier.load_state_dict(supernet.net.classifier.state_dict())
    for mine, theirs, plan in zip(net.cells, supernet.net.cells, space.plans):
        mine.preprocess0.load_state_dict(theirs.preprocess0.state_dict())
        mine.preprocess1.load_state_dict(theirs.preprocess1.state_dict())
        for k, (op, source) in enumerate(getattr(genotype, plan.cell_type)):
            node = 2 + k // 2
            mine._ops[k].load_state_dict(theirs.mixed.edges[f"{node}_{source}"][theirs.mixed.ops.index(op)].state_dict())


def randomise_bn(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("space_name", ["nb201", "darts_tiny"])
def test_a_path_computes_the_architectures_own_network(space_name):
    torch.manual_seed(0)
    space = get_space(space_name)
    supernet = CellSupernet(space)
    randomise_bn(supernet)
    x = torch.randn(2, 3, 16, 16)
    rng = random.Random(1)
    samples = [space.sample(rng) for _ in range(2)]
    if space_name == "nb201":
        samples.append(parse_nb201_string(MIXED))
    for choices in samples:
        arch = Arch.create(space, choices)
        net = space.build_model(arch.choice_map)
        if space_name == "nb201":
            copy_nb201_path(net, supernet, arch)
        else:
            copy_darts_path(net, supernet, space, arch)
        supernet.eval(), net.eval()
        with torch.inference_mode():
            assert torch.allclose(supernet.forward_path(x, path_indices(space, arch)), net(x), atol=1e-5)


def test_proxy_size_and_refusals():
    space = get_space("nb201")
    small, full = CellSupernet(space, channels=4, cells=1), CellSupernet(space)
    assert len(small.cells) == 3 + 2 and len(full.cells) == 15 + 2
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 20
    with pytest.raises(HwnasError, match="not a cell space"):
        CellSupernet(get_space("tiny"))
    with pytest.raises(HwnasError, match="shrink a cell space's supernet"):
        SharedEvaluator(get_space("tiny"), load_data("digits", 16), SPOSConfig(supernet_cells=1), "x.pt")


@pytest.mark.parametrize("space_name", ["nb201", "darts_tiny"])
def test_shared_evaluator_trains_and_scores_cell_spaces(space_name, tmp_path):
    space = get_space(space_name, resolution=16)
    data = load_data("digits", 16)
    config = SPOSConfig(epochs=1, batch_size=32, max_batches=3, calib_batches=1, calib_batch_size=32, score_batches=1,
                        supernet_channels=4, supernet_cells=1 if space_name == "nb201" else 3)
    evaluator = SharedEvaluator(space, data, config, tmp_path / "supernet.pt")
    arch = Arch.create(space, space.sample(random.Random(0)))
    score = evaluator.score(arch, 0)
    assert 0.0 <= score <= 100.0 and (tmp_path / "supernet.pt").is_file()
    assert evaluator.identity["supernet_cells"] == config.supernet_cells
    # the same supernet, scored with the training's running BN statistics
    plain = SharedEvaluator(space, data, SPOSConfig(**{**config.__dict__, "recalibrate": False}), tmp_path / "supernet.pt")
    assert 0.0 <= plain.score(arch, 0) <= 100.0


def test_held_out_split_is_in_random_order_so_a_capped_score_sees_every_class():
    digits = load_data("digits", 16)
    order = sorted(range(len(digits.train)), key=lambda i: int(dataset_labels(digits.train)[i]))
    data = dataclasses.replace(digits, train=Subset(digits.train, order))  # class by class, as an ImageFolder
    held = holdout_data(data, 0.2, 0).val
    labels = dataset_labels(held).tolist()
    assert len(set(labels[:64])) == 10  # class by class, the first 64 would hold 2 classes
    assert held.indices == holdout_data(data, 0.2, 0).val.indices  # seeded
