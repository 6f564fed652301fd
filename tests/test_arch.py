"""Architectures as data: JSON round trip, stable hash, validation, presets against timm."""

import json
import random

import pytest
import timm
import torch

from hwnas.core.arch import Arch, arch_from_dict, load_arch, save_arch
from hwnas.core.presets import resolve_arch
from hwnas.errors import ArchError
from hwnas.core.models import arch_backbone, arch_model
from hwnas.core.presets import PRESETS, get_preset, timm_equivalent
from hwnas.core.spaces import SPACES, get_space


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if timm_equivalent(n)))
def test_preset_has_exactly_timms_parameter_count(name):
    ours = arch_model(get_preset(name))
    theirs = timm.create_model(timm_equivalent(name), pretrained=False)
    assert n_params(ours) == n_params(theirs)
    assert isinstance(ours, timm.models.efficientnet.EfficientNet)


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_json_round_trip_and_stable_hash(space_name, tmp_path):
    space = get_space(space_name)
    arch = Arch.create(space, space.sample(random.Random(3)))
    path = tmp_path / "arch.json"
    save_arch(arch, path)
    loaded = load_arch(path)
    assert loaded == arch
    assert loaded.hash == arch.hash and len(arch.hash) == 12
    doc = json.loads(path.read_text())
    assert doc["format"] == "hwnas.arch" and doc["version"] == 1 and doc["space"] == space_name
    # choice order does not change the hash
    shuffled = dict(reversed(list(arch.choice_map.items())))
    assert Arch.create(space, shuffled).hash == arch.hash


def test_different_choices_have_different_hashes():
    space = get_space("tiny")
    a = Arch.create(space, {"layer0": "skip", "layer1": "k3_e1", "layer2": "k3_e3"})
    b = Arch.create(space, {"layer0": "skip", "layer1": "k3_e1", "layer2": "k5_e3"})
    assert a.hash != b.hash


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_sampled_arch_builds_and_runs(space_name):
    space = get_space(space_name)
    arch = Arch.create(space, space.sample(random.Random(1)))
    model = arch_model(arch).eval()
    res = 64 if space_name != "tiny" else 32
    with torch.inference_mode():
        assert model(torch.randn(2, 3, res, res)).shape == (2, space.num_classes)


def test_backbone_gives_multiscale_features():
    backbone = arch_backbone(get_preset("fbnet_c"))
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == backbone.feature_info.channels()
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_skip_layers_are_left_out_of_the_arch_def():
    space = get_space("tiny")
    arch = Arch.create(space, {"layer0": "skip", "layer1": "k3_e1_g2", "layer2": "skip"})
    assert arch.arch_def(space) == [["ir_r1_k3_s2_e1_c16_g2"]]


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "expected a JSON object"),
        ({"space": "fbnet"}, "needs a string 'space' and an object 'choices'"),
        ({"space": "nope", "choices": {}}, "unknown search space 'nope'"),
        ({"space": "tiny", "choices": {"layer0": "skip", "layer1": "k3_e1"}}, "missing decision 'layer2'"),
        ({"space": "tiny", "choices": {"layer0": "skip", "layer1": "skip", "layer2": "skip"}}, "choice 'skip' for decision 'layer1'"),
        ({"space": "tiny", "choices": {"layer0": "k3_e1", "layer1": "k3_e1", "layer2": "k3_e1", "layer9": "x"}}, "decision 'layer9' is not part"),
        ({"space": "tiny", "version": 7, "choices": {}}, "version 7 is not supported"),
    ],
)
def test_malformed_or_mismatched_arch_is_an_arch_error(doc, message):
    with pytest.raises(ArchError, match=message):
        arch_from_dict(doc)


def test_arch_of_another_space_is_refused():
    arch = get_preset("fbnet_c")
    with pytest.raises(ArchError, match="not 'tiny'"):
        arch.arch_def(get_space("tiny"))


def test_resolve_arch(tmp_path):
    assert resolve_arch("preset:mnasnet_a1") == get_preset("mnasnet_a1")
    with pytest.raises(ArchError, match="unknown preset"):
        resolve_arch("preset:resnet50")
    with pytest.raises(ArchError, match="neither an existing JSON file"):
        resolve_arch(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        resolve_arch(str(bad))
