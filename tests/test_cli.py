"""The CLI contract, run in-process: `main(argv) -> int`."""

import json

import pytest
import timm

from hwnas.cli import main


def test_spaces_lists_every_space(capsys):
    assert main(["spaces", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"darts", "darts_small", "darts_tiny", "fbnet", "fbnet_cifar100", "mnasnet",
                                          "mobilenetv3", "mobilenetv3_w12", "nb201", "proxylessnas", "tiny"}
    fbnet = next(r for r in rows if r["name"] == "fbnet")
    assert fbnet["decisions"] == 22 and 20 < fbnet["log10_size"] < 21


def test_space_show_json(capsys):
    assert main(["space", "show", "fbnet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["layers"]) == 22
    assert doc["layers"][1]["input_shape"] == [16, 112, 112]
    assert doc["layers"][1]["candidates"]["k5_e6"] == "ir_r1_k5_s2_e6_c24"


def test_space_show_text(capsys):
    assert main(["space", "show", "mnasnet"]) == 0
    assert "s4.width" in capsys.readouterr().out


def test_arch_sample_writes_a_valid_file(tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "tiny", "--seed", "4", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["space"] == "tiny"
    assert main(["arch", "sample", "--space", "tiny", "--seed", "4"]) == 0
    printed = capsys.readouterr().out.split("\n", 1)[1]
    assert json.loads(printed) == json.loads(out.read_text())


def test_arch_summary_matches_timm_parameter_count(capsys):
    assert main(["arch", "summary", "preset:fbnet_c", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = sum(p.numel() for p in timm.create_model("fbnetc_100").parameters())
    assert doc["params"] == expected
    assert 350e6 < doc["macs"] < 400e6  # FBNet-C: 375M MACs in the paper
    assert doc["activations"] > 0


def test_arch_summary_of_a_file(tmp_path, capsys):
    out = tmp_path / "a.json"
    main(["arch", "sample", "--space", "mobilenetv3", "--out", str(out)])
    capsys.readouterr()
    assert main(["arch", "summary", str(out), "--resolution", "128"]) == 0
    assert "params" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["space", "show", "nope"], "unknown search space 'nope'"),
        (["arch", "sample", "--space", "nope"], "unknown search space"),
        (["arch", "summary", "preset:nope"], "unknown preset 'nope'"),
        (["arch", "summary", "missing.json"], "neither an existing JSON file"),
        (["arch", "summary", "preset:fbnet_c", "--resolution", "100"], "multiple of 32"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("hwnas: error:")


def test_malformed_arch_file_exit_2_and_nothing_written(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"space": "tiny", "choices": {"layer0": "k9_e9"}}))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["arch", "summary", str(bad)]) == 2
    assert "is not allowed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_sample_to_file_in_unknown_space_writes_nothing(tmp_path):
    out = tmp_path / "a.json"
    assert main(["arch", "sample", "--space", "nope", "--out", str(out)]) == 2
    assert not out.exists()


def test_usage_error_is_exit_2_and_one_line(capsys):
    assert main(["arch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: arch: the following arguments are required") and "\n" not in err
    assert "see `hwnas arch --help`" in err
    assert main([]) == 2
    assert main(["search", "--seed", "-1"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
