"""Published latency tables (Once-for-All, ProxylessNAS) imported as ours, and OFA net.configs
imported as mobilenetv3_w12 architectures.

The key check re-implements the summation of OFA's `MBv3LatencyTable.predict_network_latency_given_config`
(ofa/nas/efficiency_predictor/latency_lookup_table.py) over OFA's own key strings, and of
`ProxylessNASLatencyTable` likewise, and asserts our predictor gives the same figure."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import pytest
import yaml

import hwnas.latency_tables
from hwnas.core.arch import Arch, load_arch, save_arch
from hwnas.core.build import build_model
from hwnas.cli import main
from hwnas.errors import ArchError
from hwnas.latency_tables.predictor import LatencyPredictor
from hwnas.latency_tables.published import import_published
from hwnas.profilers.table import LatencyTable
from hwnas.core.ofa_config import arch_from_ofa_config
from hwnas.profilers.session import op_module
from hwnas.core.spaces import SKIP, get_space

OFA_RESOLUTIONS = (160, 176, 192, 208, 224)

# --- an OFA-style net.config, written by hand the way OFA's MobileNetV3.config writes it ------------
W12_STAGES = [(32, 2, "relu", False), (48, 2, "relu", True), (96, 2, "h_swish", False), (136, 1, "h_swish", True),
              (192, 2, "h_swish", True)]


def _divisible8(v: float) -> int:
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


def _conv_layer(cin, cout, k, stride, act, use_bn=True, bias=False):
    return {"name": "ConvLayer", "kernel_size": k, "stride": stride, "dilation": 1, "groups": 1, "bias": bias,
            "has_shuffle": False, "use_se": False, "in_channels": cin, "out_channels": cout, "use_bn": use_bn,
            "act_func": act, "dropout_rate": 0, "ops_order": "weight_bn_act"}


def _block(cin, cout, k, stride, e, act, se):
    mid = None if e == 1 else _divisible8(round(cin * e))
    conv = {"name": "MBConvLayer", "in_channels": cin, "out_channels": cout, "kernel_size": k, "stride": stride,
            "expand_ratio": e, "mid_channels": mid, "act_func": act, "use_se": se, "groups": None}
    shortcut = ({"name": "IdentityLayer", "in_channels": cin, "out_channels": cout, "use_bn": False, "act_func": None,
                 "dropout_rate": 0, "ops_order": "weight_bn_act"} if stride == 1 and cin == cout else None)
    return {"name": "ResidualBlock", "mobile_inverted_conv": conv, "shortcut": shortcut}


def ofa_net_config(ks, e, d, classes=1000):
    """OFAMobileNetV3(width_mult=1.2).set_active_subnet(ks, e, d); get_active_subnet().config, by hand."""
    blocks = [_block(24, 24, 3, 1, 1, "relu", False)]
    cin = 24
    for stage, (width, stride, act, se) in enumerate(W12_STAGES):
        for j in range(d[stage]):
            slot = 4 * stage + j
            blocks.append(_block(cin, width, ks[slot], stride if j == 0 else 1, e[slot], act, se))
            cin = width
    return {"name": "MobileNetV3", "bn": {"momentum": 0.1, "eps": 1e-5},
            "first_conv": _conv_layer(3, 24, 3, 2, "h_swish"), "blocks": blocks,
            "final_expand_layer": _conv_layer(192, 1152, 1, 1, "h_swish"),
            "feature_mix_layer": _conv_layer(1152, 1536, 1, 1, "h_swish", use_bn=False),
            "classifier": {"name": "LinearLayer", "in_features": 1536, "out_features": classes, "bias": True,
                           "use_bn": False, "act_func": None, "dropout_rate": 0.1, "ops_order": "weight_bn_act"}}


SUBNETS = {
    "smallest": ([3] * 20, [3] * 20, [2] * 5),
    "largest": ([7] * 20, [6] * 20, [4] * 5),
    "mixed": ([3, 5, 7, 5, 7, 3, 3, 5, 5, 5, 7, 3, 7, 7, 3, 5, 3, 7, 5, 3],
              [4, 6, 3, 6, 3, 3, 6, 4, 6, 4, 4, 3, 3, 6, 6, 4, 6, 3, 4, 6], [3, 2, 4, 3, 4]),
}


def ofa_sum(lut: dict, config: dict, image_size: int) -> float:
    """OFA's MBv3 summation over its own keys: stem, every block, final expand, pool, mix, classifier."""
    def shape(*dims):
        return "x".join(str(v) for v in dims)

    size = (image_size + 1) // 2
    first = config["first_conv"]
    total = lut[f"Conv-input:{shape(image_size, image_size, 3)}-output:{shape(size, size, first['out_channels'])}"]["mean"]
    for block in config["blocks"]:
        conv = block["mobile_inverted_conv"]
        out = int((size - 1) / conv["stride"] + 1)
        mid = conv["mid_channels"] if conv["mid_channels"] is not None else round(conv["in_channels"] * conv["expand_ratio"])
        key = (f"expanded_conv-input:{shape(size, size, conv['in_channels'])}-output:{shape(out, out, conv['out_channels'])}"
               f"-expand:{mid}-kernel:{conv['kernel_size']}-stride:{conv['stride']}"
               f"-idskip:{int(block['shortcut'] is not None)}-se:{int(conv['use_se'])}-hs:{int(conv['act_func'] == 'h_swish')}")
        total += lut[key]["mean"]
        size = out
    fe, fm, cl = config["final_expand_layer"], config["feature_mix_layer"], config["classifier"]
    total += lut[f"Conv_1-input:{shape(size, size, fe['in_channels'])}-output:{shape(size, size, fe['out_channels'])}"]["mean"]
    total += lut[f"AvgPool2D-input:{shape(size, size, fe['out_channels'])}-output:{shape(1, 1, fe['out_channels'])}"]["mean"]
    total += lut[f"Conv_2-input:{shape(1, 1, fm['in_channels'])}-output:{shape(1, 1, fm['out_channels'])}"]["mean"]
    total += lut[f"Logits-input:{shape(1, 1, cl['in_features'])}-output:{cl['out_features']}"]["mean"]
    return total


@pytest.fixture
def ofa_files(shared_data):
    return [shared_data / "ofa_luts" / "note10" / f"{r}_lookup_table.yaml" for r in OFA_RESOLUTIONS]


# --- OFA tables ---------------------------------------------------------------------------------
def test_every_ofa_row_maps_onto_an_op_of_mobilenetv3_w12(ofa_files):
    results = import_published(ofa_files, "ofa")
    for (table, report), resolution in zip(results, OFA_RESOLUTIONS):
        # stem, ds, 90 ir, the final-expand cn block and the head (pool + mix + classifier: 3 rows)
        assert (report.resolution, report.rows, report.mapped, report.ops, report.unmapped) == (resolution, 96, 96, 94, ())
        assert table.backend == "published" and table.resolutions == [resolution]
        assert table.device["name"] == "Samsung Galaxy Note10"
        assert table.backend_options["statistic"] == "mean"
        assert all(m.p50_ms == m.mean_ms for m in table.entries.values())
        # memory was not published: computed here from each op
        assert all(m.param_bytes > 0 and m.input_bytes > 0 and m.peak_source == "estimate:hooks"
                   for m in table.entries.values())


@pytest.mark.parametrize("subnet", sorted(SUBNETS))
def test_our_raw_sum_is_ofas_own_summation(ofa_files, subnet):
    config = ofa_net_config(*SUBNETS[subnet])
    arch, classes = arch_from_ofa_config(copy.deepcopy(config))
    assert classes == 1000
    for (table, _), path, resolution in zip(import_published(ofa_files, "ofa"), ofa_files, OFA_RESOLUTIONS):
        lut = yaml.safe_load(path.read_text())
        predictor = LatencyPredictor(table, get_space("mobilenetv3_w12", resolution=resolution))
        assert predictor.raw_sum_ms(arch) == pytest.approx(ofa_sum(lut, config, resolution), abs=1e-6)


def test_one_file_per_resolution_into_a_directory_and_overlaps_refused_in_one_file(ofa_files, tmp_path, capsys):
    assert main(["lut", "import", *map(str, ofa_files), "--format", "ofa", "--out", str(tmp_path / "note10") + "/"]) == 0
    written = sorted(p.name for p in (tmp_path / "note10").iterdir())
    assert written == [f"samsung-galaxy-note10_ofa_{r}.json" for r in OFA_RESOLUTIONS]
    # 176 and 192 px both end on 6x6 maps: the same op keys, timed differently in each file
    assert main(["lut", "import", *map(str, ofa_files), "--format", "ofa", "--out", str(tmp_path / "all.json")]) == 2
    assert "give --out a directory" in capsys.readouterr().err
    assert not (tmp_path / "all.json").exists()
    assert main(["lut", "import", str(ofa_files[0]), str(ofa_files[1]), "--format", "ofa",
                 "--out", str(tmp_path / "two.json")]) == 0
    assert LatencyTable.load(tmp_path / "two.json").resolutions == [160, 176]
    note10 = tmp_path / "note10"
    assert main(["lut", "merge", str(note10 / "samsung-galaxy-note10_ofa_160.json"),
                 str(note10 / "samsung-galaxy-note10_ofa_224.json"), "--out", str(tmp_path / "m.json")]) == 0
    assert main(["lut", "merge", str(note10 / "samsung-galaxy-note10_ofa_176.json"),
                 str(note10 / "samsung-galaxy-note10_ofa_192.json"), "--out", str(tmp_path / "m2.json")]) == 2
    assert "keep one table per resolution" in capsys.readouterr().err
    assert not (tmp_path / "m2.json").exists()
    assert main(["lut", "import", str(ofa_files[0]), "--format", "ofa", "--out", str(tmp_path / "two.json")]) == 2
    assert "exists" in capsys.readouterr().err


def test_published_table_never_merges_resumes_or_measures(ofa_files, tmp_path, capsys):
    lut = tmp_path / "note10_224.json"
    assert main(["lut", "import", str(ofa_files[-1]), "--format", "ofa", "--out", str(lut), "--device", "My Note10"]) == 0
    assert LatencyTable.load(lut).device["name"] == "My Note10"
    capsys.readouterr()
    assert main(["lut", "show", str(lut)]) == 0
    shown = capsys.readouterr().out
    assert "My Note10 (published: Once-for-All" in shown and "published mean" in shown
    for command in (["calibrate", "--lut", str(lut), "--samples", "2"],
                    ["validate", "--lut", str(lut), "--samples", "2", "--out", str(tmp_path / "v")]):
        assert main(command) == 2
        assert "imported from a published one" in capsys.readouterr().err
    ours = sorted(Path(hwnas.latency_tables.__file__).parent.glob("*ort-cpu*.json"))[0]
    assert main(["lut", "merge", str(ours), str(lut), "--out", str(tmp_path / "m.json")]) == 2
    assert "differ in backend" in capsys.readouterr().err
    assert main(["profile", "--space", "mobilenetv3_w12", "--backend", "ort-cpu", "--threads", "1",
                 "--out", str(lut), "--resume", "--no-progress"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert LatencyTable.load(lut).backend == "published"


def test_predict_on_a_note10_table_from_an_imported_net_config(ofa_files, tmp_path, capsys):
    lut, config, arch = tmp_path / "t.json", tmp_path / "net.config", tmp_path / "arch.json"
    config.write_text(json.dumps(ofa_net_config(*SUBNETS["mixed"])))
    assert main(["lut", "import", str(ofa_files[-1]), "--format", "ofa", "--out", str(lut)]) == 0
    assert main(["arch", "import", str(config), "--format", "ofa", "--out", str(arch)]) == 0
    capsys.readouterr()
    assert main(["predict", "--lut", str(lut), str(arch), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    lut_rows = yaml.safe_load(ofa_files[-1].read_text())
    assert doc["raw_sum_ms"] == pytest.approx(ofa_sum(lut_rows, ofa_net_config(*SUBNETS["mixed"]), 224), abs=1e-6)


# --- ProxylessNAS's mobile table ----------------------------------------------------------------
def proxyless_sum(lut: dict, space, arch_def) -> float:
    """ProxylessNASLatencyTable's summation: stem, blocks (expand = ratio), feature mix, logits."""
    size, chs = 112, 32
    total = lut["Conv-input:224x224x3-output:112x112x32"]["mean"]
    for block in [b for stage in arch_def for b in stage]:
        parts = dict((p[0], p[1:]) for p in block.split("_")[2:])
        out_chs, stride = int(parts["c"]), int(parts["s"])
        ratio, out = int(parts.get("e", 1)), int((size - 1) / stride + 1)
        total += lut[f"expanded_conv-input:{size}x{size}x{chs}-output:{out}x{out}x{out_chs}-expand:{ratio}"
                     f"-kernel:{parts['k']}-stride:{stride}-idskip:{int(stride == 1 and chs == out_chs)}"]["mean"]
        size, chs = out, out_chs
    total += lut[f"Conv_1-input:{size}x{size}x{chs}-output:{size}x{size}x1280"]["mean"]
    return total + lut[f"Logits-input:{size}x{size}x1280-output:1000"]["mean"]


def test_proxylessnas_mobile_table_fits_the_proxylessnas_space(shared_data, tmp_path, capsys):
    path = shared_data / "ofa_luts" / "proxylessnas" / "mobile_trim.yaml"
    ((table, report),) = import_published([path], "proxylessnas")
    assert (report.rows, report.mapped, report.ops) == (72, 70, 69)
    assert [k.split("-kernel:")[1][0] for k, _ in report.unmapped] == ["5", "7"]
    assert all("fixed at 3x3" in why for _, why in report.unmapped)
    assert table.device["name"] == "Google Pixel 1"
    lut = yaml.safe_load(path.read_text())
    first = next(iter(table.entries.values()))
    assert first.std_ms > 0  # the published var, as a std
    space = get_space("proxylessnas")
    predictor = LatencyPredictor(table, space)
    rng = random.Random(3)
    archs = [space.sample(rng) for _ in range(3)] + [{d.name: (SKIP if SKIP in d.choices else "k3_e3") for d in space.decisions}]
    for choices in archs:
        arch = Arch.create(space, choices)
        assert predictor.raw_sum_ms(arch) == pytest.approx(proxyless_sum(lut, space, space.arch_def(choices)), abs=1e-6)
    table.save(tmp_path / "pixel1.json")
    assert main(["lut", "show", str(tmp_path / "pixel1.json")]) == 0
    assert "Google Pixel 1 (published: ProxylessNAS" in capsys.readouterr().out
    renamed = tmp_path / "some_table.yaml"  # nothing says which phone: the user must
    renamed.write_text(path.read_text())
    assert main(["lut", "import", str(renamed), "--format", "proxylessnas", "--out", str(tmp_path / "x.json")]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["lut", "import", str(path), "--format", "ofa", "--out", str(tmp_path / "x.json")]) == 2
    assert "lacks the row 'Conv-input:224x224x3-output:112x112x24'" in capsys.readouterr().err


# --- the net.config importer --------------------------------------------------------------------
def test_net_config_becomes_the_matching_mobilenetv3_w12_arch(tmp_path):
    ks, e, d = SUBNETS["mixed"]
    arch, classes = arch_from_ofa_config(ofa_net_config(ks, e, d, classes=10))
    choices = arch.choice_map
    assert classes == 10 and arch.space == "mobilenetv3_w12"
    assert [choices[f"s{i}.depth"] for i in range(1, 6)] == ["3", "2", "4", "3", "4"]
    assert choices["s1.l0"] == "k3_e4" and choices["s1.l2"] == "k7_e3" and choices["s5.l3"] == "k3_e6"
    assert choices["s1.l3"] == "k3_e3"  # inactive: the first choice
    space = get_space("mobilenetv3_w12")
    blocks = [b for stage in space.arch_def(choices) for b in stage]
    assert len(blocks) == 1 + sum(d) + 1 and blocks[-1] == "cn_r1_k1_s1_c1152"


def _broken(change):
    config = ofa_net_config(*SUBNETS["mixed"])
    change(config)
    return config


@pytest.mark.parametrize("change, message", [
    (lambda c: c["blocks"][1]["mobile_inverted_conv"].update(kernel_size=9), "kernel_size is 9"),
    (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(expand_ratio=2, mid_channels=64), "expand_ratio is 2"),
    (lambda c: c["first_conv"].update(out_channels=16), "first_conv: out_channels is 16"),
    (lambda c: c["blocks"][4]["mobile_inverted_conv"].update(use_se=False), "use_se is False"),
    (lambda c: c["feature_mix_layer"].update(out_channels=1280), "feature_mix_layer: out_channels is 1280"),
    (lambda c: c["blocks"].pop(5), "stage 2 (c48) has 1 block from"),
    (lambda c: c["blocks"][2].update(shortcut=None), "shortcut is absent"),
    (lambda c: c["blocks"][2]["mobile_inverted_conv"].update(mid_channels=100), "mid_channels 100"),
])
def test_net_configs_that_do_not_fit_are_refused_naming_the_mismatch(change, message, tmp_path, capsys):
    with pytest.raises(ArchError, match=re.escape(message)):
        arch_from_ofa_config(_broken(change))
    path = tmp_path / "net.config"
    path.write_text(json.dumps(_broken(change)))
    assert main(["arch", "import", str(path), "--format", "ofa", "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.json").exists()


def test_arch_import_writes_an_arch_file(tmp_path, capsys):
    path = tmp_path / "net.config"
    path.write_text(json.dumps(ofa_net_config(*SUBNETS["largest"])))
    assert main(["arch", "import", str(path), "--format", "ofa", "--out", str(tmp_path / "a.json")]) == 0
    arch = load_arch(tmp_path / "a.json")
    assert arch.space == "mobilenetv3_w12" and all(v == "k7_e6" or k.endswith("depth") for k, v in arch.choices)
    assert main(["arch", "import", str(path), "--format", "ofa", "--out", str(tmp_path / "a.json")]) == 2


# --- the w1.2 space is OFA's network --------------------------------------------------------------
def test_mobilenetv3_w12_builds_ofas_widths_and_pooled_head():
    space = get_space("mobilenetv3_w12", resolution=176)
    assert space.widths == (32, 48, 96, 136, 192) and space.build_config.stem_size == 24
    arch, _ = arch_from_ofa_config(ofa_net_config(*SUBNETS["smallest"]))
    model = build_model(arch.arch_def(space), space.build_config, 1000)
    assert model.conv_head.in_channels == 1152 and model.conv_head.out_channels == 1536
    assert model.conv_head.bias is None and not any(n.startswith("norm_head.") for n, _ in model.named_parameters())
    (head,) = [op for op in space.all_ops() if op.kind == "head"]
    standalone = op_module(head, space.build_config)
    count = sum(p.numel() for p in standalone.parameters())
    assert count == sum(p.numel() for n, p in model.named_parameters() if n.startswith(("conv_head", "classifier")))
    with pytest.raises(Exception, match="multiple of 4"):
        get_space("mobilenetv3_w12", resolution=174)


ROW = "expanded_conv-input:7x7x160-output:7x7x160-expand:960-kernel:3-stride:1-idskip:1-se:1-hs:1"


@pytest.mark.parametrize("body, message", [
    (f"{ROW}:\n  count: 10\n  mean: .nan\n  std: 0.1\n", "mean nan; it must be a finite number > 0"),
    (f"{ROW}:\n  count: 10\n  mean: .inf\n  std: 0.1\n", "mean inf"),
    (f"{ROW}:\n  count: 10\n  mean: -1.0\n  std: 0.1\n", "mean -1.0"),
    (f"{ROW}:\n  count: 10\n  mean: true\n  std: 0.1\n", "mean True, which is not a number"),
    (f"{ROW}:\n  count: 10\n  mean: '1.0'\n  std: 0.1\n", "mean '1.0', which is not a number"),
    (f"{ROW}:\n  count: 10\n  mean: 1.0\n  var: -0.5\n", "var -0.5; it must be a finite number >= 0"),
    (f"{ROW}:\n  count: 0\n  mean: 1.0\n  std: 0.1\n", "count 0; it must be a whole number >= 1"),
    (f"{ROW}:\n  count: 10\n  mean: 0.994\n  std: 0.1\n{ROW}:\n  count: 10\n  mean: 99.0\n  std: 0.1\n",
     "is given twice"),
])
def test_lut_import_checks_every_value(tmp_path, capsys, body, message):
    path = tmp_path / "note10" / "224_lookup_table.yaml"
    path.parent.mkdir()
    path.write_text(body)
    out = tmp_path / "t.json"
    assert main(["lut", "import", str(path), "--format", "ofa", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_lut_import_refuses_a_file_that_is_not_utf8_and_an_empty_device(tmp_path, capsys):
    path = tmp_path / "note10" / "224_lookup_table.yaml"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe\x00bad")
    assert main(["lut", "import", str(path), "--format", "ofa", "--out", str(tmp_path / "t.json")]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
    path.write_text(f"{ROW}:\n  count: 10\n  mean: 1.0\n  std: 0.1\n")
    assert main(["lut", "import", str(path), "--format", "ofa", "--device", " ", "--out", str(tmp_path / "t.json")]) == 2
    assert "--device is empty" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


# --- published tables end to end: any class count, memory, messages, search, export, transfer -----
@pytest.fixture
def note10_160(ofa_files, tmp_path):
    lut = tmp_path / "note10_160.json"
    assert main(["lut", "import", str(ofa_files[0]), "--format", "ofa", "--out", str(lut)]) == 0
    return lut


def test_a_head_of_any_class_count_is_derived_from_the_published_classifier_row(note10_160, ofa_files):
    table = LatencyTable.load(note10_160)
    rows = yaml.safe_load(ofa_files[0].read_text())
    logits = rows["Logits-input:1x1x1536-output:1000"]["mean"]
    arch = Arch.create(get_space("mobilenetv3_w12", resolution=160), dict(SAMPLE))
    imagenet = LatencyPredictor(table, get_space("mobilenetv3_w12", resolution=160)).predict(arch)
    digits_predictor = LatencyPredictor(table, get_space("mobilenetv3_w12", resolution=160, num_classes=10))
    digits = digits_predictor.predict(arch)
    assert imagenet.derived is None
    assert digits.latency_ms == pytest.approx(imagenet.latency_ms - logits + logits * 10 / 1000, abs=1e-9)
    assert "derived from the published 1000-class head" in digits.derived and "10/1000" in digits.derived
    assert digits.error_pct is None  # a published table's error is unknown, derived head or not
    # params and peak activations from the architecture itself, as `arch summary` counts them
    model = get_space("mobilenetv3_w12", resolution=160, num_classes=10).build_model(arch.choice_map)
    assert digits.params == sum(p.numel() for p in model.parameters())
    assert digits.peak_activation_bytes >= 3 * 160 * 160 * 4
    assert digits_predictor.fingerprint() != LatencyPredictor(
        table, get_space("mobilenetv3_w12", resolution=160)).fingerprint()


SAMPLE = {**{f"s{i}.depth": "3" for i in range(1, 6)},
          **{f"s{i}.l{j}": "k5_e4" for i in range(1, 6) for j in range(4)}}


def test_predict_on_a_published_table_states_an_unknown_error_and_real_memory(note10_160, tmp_path, capsys):
    arch = tmp_path / "a.json"
    save_arch(Arch.create(get_space("mobilenetv3_w12", resolution=160), dict(SAMPLE)), arch)
    capsys.readouterr()
    assert main(["predict", "--lut", str(note10_160), str(arch), "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "error unknown" in out and "calibrate" not in out
    assert "params 0," not in out and "derived: the 10-class head" in out


@pytest.mark.parametrize("flags, message", [
    (["--resolution", "192"], "import the source's 192px table with `hwnas lut import 192_lookup_table.yaml --format ofa`"),
    ([], "for space 'mobilenetv3_w12', not 'fbnet'"),
])
def test_a_published_table_never_prescribes_a_profile_of_its_device(note10_160, tmp_path, capsys, flags, message):
    space = "mobilenetv3_w12" if flags else "fbnet"
    arch = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", space, "--seed", "0", "--out", str(arch)]) == 0
    capsys.readouterr()
    assert main(["predict", "--lut", str(note10_160), str(arch), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "--backend published" not in err and len(err.strip().splitlines()) == 1


def test_a_table_imported_without_classifier_rows_asks_for_a_reimport(note10_160, tmp_path, capsys):
    doc = json.loads(note10_160.read_text())
    del doc["statistics"]["classifiers"]
    note10_160.write_text(json.dumps(doc))
    arch = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "mobilenetv3_w12", "--seed", "0", "--out", str(arch)]) == 0
    assert main(["predict", "--lut", str(note10_160), str(arch), "--resolution", "160", "--num-classes", "10"]) == 2
    assert "import the source files again with `hwnas lut import" in capsys.readouterr().err


@pytest.mark.slow
def test_search_on_ten_class_data_with_and_without_a_task_head(note10_160, tmp_path, capsys):
    common = ["search", "--strategy", "random", "--space", "mobilenetv3_w12", "--resolution", "160", "--lut",
              str(note10_160), "--latency-budget", "30ms", "--data", "digits", "--trials", "1", "--max-batches", "1",
              "--epochs", "1"]
    # the task head's cost is derived from a local measurement of it against the published head, so it moves with
    # this machine's load; 30 ms (the range is ~20-43 ms) stays feasible under load where 20 ms did not (21.95 ms)
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    result = json.loads((tmp_path / "plain" / "result.json").read_text())
    assert result["meets_budgets"]["latency"] and "derived from the published 1000-class head" in result["latency_derived"]
    assert main([*common, "--task-head", "lraspp", "--out", str(tmp_path / "task")]) == 0
    out = capsys.readouterr().out
    assert "the head's cost on Samsung Galaxy Note10" in out and "is derived" in out
    result = json.loads((tmp_path / "task" / "result.json").read_text())
    assert "head's cost on Samsung Galaxy Note10" in result["latency_derived"]


def test_head_on_device_scales_only_a_published_tables_head(note10_160):
    from hwnas.transfer.latency import head_on_device

    published = LatencyTable.load(note10_160)
    head, derived = head_on_device(0.5, 4.0, 16.0, published)
    assert head == pytest.approx(2.0) and "derived" in derived and "Samsung Galaxy Note10" in derived
    ours = LatencyTable.load(sorted(Path(hwnas.latency_tables.__file__).parent.glob("*ort-cpu*.json"))[0])
    assert head_on_device(0.5, 4.0, 16.0, ours) == (0.5, None)


def test_export_with_a_published_table_predicts_and_does_not_measure(note10_160, tmp_path, capsys):
    arch = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "mobilenetv3_w12", "--seed", "0", "--out", str(arch)]) == 0
    capsys.readouterr()
    assert main(["export", str(arch), "--lut", str(note10_160), "--onnx", str(tmp_path / "m.onnx"),
                 "--resolution", "160"]) == 0
    out = capsys.readouterr().out
    assert "predicted" in out and "not measured here" in out and "profile" not in out
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["latency"]["measured_ms"] is None and report["latency"]["device"] == "Samsung Galaxy Note10"
    assert report["latency"]["predicted_ms"] > 0 and report["latency"]["stated_error_pct"] is None


def test_a_budget_below_the_smallest_mobilenetv3_network_is_refused_at_once(note10_160, tmp_path, capsys):
    space = get_space("mobilenetv3_w12", resolution=160, num_classes=10)
    predictor = LatencyPredictor(LatencyTable.load(note10_160), space)
    fewest, lowest = predictor.smallest_memory()
    rng = random.Random(0)
    sampled = [predictor.predict(Arch.create(space, space.sample(rng))) for _ in range(200)]
    assert fewest <= min(p.params for p in sampled) and lowest <= min(p.peak_activation_bytes for p in sampled)
    smallest = Arch.create(space, space.minimal_choices(lambda op: predictor.measurement(op).param_bytes))
    assert predictor.predict(smallest).params == fewest  # a real network has it: the minimum is exact
    assert main(["search", "--strategy", "random", "--space", "mobilenetv3_w12", "--resolution", "160", "--lut",
                 str(note10_160), "--params-budget", str(fewest - 1), "--data", "digits",
                 "--out", str(tmp_path / "run")]) == 2
    assert f"at least {fewest:,}" in capsys.readouterr().err and not (tmp_path / "run").exists()
