"""Every flag is checked before any work or file: a negative seed, a zero cap or thread count and a
calibration of one round are refused at once with one line, exit 2, and no run folder."""

import pytest

from hwnas.cli import main


@pytest.mark.parametrize("argv, message", [
    (["search", "--space", "tiny", "--lut", "x.json", "--data", "digits", "--seed", "-1"],
     "argument --seed: must be >= 0, got -1"),
    (["search", "--space", "tiny", "--lut", "x.json", "--data", "digits", "--max-batches", "0"],
     "argument --max-batches: must be >= 1, got 0"),
    (["train", "preset:fbnet_c", "--data", "digits", "--seed", "1.5"], "argument --seed: '1.5' is not a whole number"),
    (["arch", "sample", "--space", "tiny", "--seed", "-3"], "argument --seed: must be >= 0"),
    (["transfer", "preset:fbnet_c", "--task", "detection", "--head", "ssdlite", "--data", "x", "--format", "coco",
      "--epochs", "1", "--threads", "0"], "argument --threads: must be >= 1"),
    (["transfer", "preset:fbnet_c", "--task", "detection", "--head", "ssdlite", "--data", "x", "--format", "coco",
      "--epochs", "1", "--max-images", "0"], "argument --max-images: must be >= 1"),
    (["calibrate", "--lut", "x.json", "--rounds", "1"], "--rounds must be >= 2"),
])
def test_bad_flags_are_refused_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    if argv[0] in ("search", "train", "transfer"):
        argv = [*argv, "--out", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
