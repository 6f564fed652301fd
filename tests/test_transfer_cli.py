"""`hwnas transfer`: outputs, kill -9 then --resume, and one-line errors on bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwnas.core.arch import Arch, save_arch
from hwnas.cli import main
from hwnas.core.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
TINY = {"layer0": "k3_e1", "layer1": "k3_e3", "layer2": "k3_e1"}


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "arch.json"
    save_arch(Arch.create(get_space("tiny"), TINY), path)
    return path


def _args(arch_file, data, out, *extra, task="segmentation", head="lraspp", fmt="pennfudan", epochs="2"):
    return ["transfer", str(arch_file), "--task", task, "--head", head, "--data", str(data), "--format", fmt,
            "--epochs", epochs, "--out", str(out), "--resolution", "64", "--batch-size", "2", "--max-images", "5",
            "--no-progress", *extra]


def _without_timing(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc.pop("wall_s")
    for record in doc["history"]:
        record.pop("wall_s")
    return doc


def test_transfer_writes_metrics_png_model_and_checked_onnx(arch_file, shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _args(arch_file, shared_data / "pennfudan", out, "--onnx", str(tmp_path / "seg.onnx"), "--latency",
                 "--clock", "thread")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "seg.onnx" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and metrics["epochs_done"] == 2 and metrics["headline"] == "miou"
    assert 0.0 <= metrics["final"]["miou"] <= 1.0 and "miou" in metrics["untrained"]
    assert metrics["onnx"]["parity"]["passed"]
    latency = metrics["latency"]
    assert latency["total_ms"] > 0 and latency["backbone_ms"] > 0 and latency["clock"] == "thread"
    assert latency["head_ms"] == pytest.approx(latency["total_ms"] - latency["backbone_ms"])
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "model.pt").is_file() and (tmp_path / "seg.onnx").is_file()
    assert main(argv) == 2  # a finished run is not overwritten without --resume
    assert "not empty" in capsys.readouterr().err


def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(arch_file, shared_data, tmp_path):
    data = shared_data / "pennfudan"
    epochs = "6"
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hwnas.cli", *_args(arch_file, data, killed, epochs=epochs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None and not (killed / "log.jsonl").exists():
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-500:]
    assert not (killed / "metrics.json").exists()  # it died mid-run
    assert main(_args(arch_file, data, killed, "--resume", epochs=epochs)) == 0
    straight = tmp_path / "straight"
    assert main(_args(arch_file, data, straight, epochs=epochs)) == 0
    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((straight / "metrics.json").read_text())
    assert a["finished"] and len(a["history"]) == int(epochs)
    assert _without_timing(a) == _without_timing(b)


def _one_line_error(argv, capsys, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hwnas: error:"), err
    for text in expected:
        assert text in err, err
    return err


def _pennfudan_copy(shared_data, tmp_path, n=3) -> Path:
    src = shared_data / "pennfudan" / "PennFudanPed"
    dst = tmp_path / "pf"
    for sub in ("PNGImages", "PedMasks"):
        (dst / sub).mkdir(parents=True)
    for path in sorted((src / "PNGImages").glob("*.png"))[:n]:
        shutil.copy(path, dst / "PNGImages")
        shutil.copy(src / "PedMasks" / f"{path.stem}_mask.png", dst / "PedMasks")
    return dst


def test_missing_annotations_unknown_format_and_empty_dataset_are_one_line_errors(arch_file, tmp_path, capsys):
    (tmp_path / "coco" / "images").mkdir(parents=True)
    _one_line_error(_args(arch_file, tmp_path / "coco", tmp_path / "o1", task="detection", head="fasterrcnn",
                          fmt="coco"), capsys, "annotations")
    _one_line_error(_args(arch_file, tmp_path / "coco", tmp_path / "o2", fmt="voc"), capsys, "unknown data format",
                    "coco, pennfudan")
    empty = tmp_path / "empty"
    for sub in ("PNGImages", "PedMasks"):
        (empty / sub).mkdir(parents=True)
    _one_line_error(_args(arch_file, empty, tmp_path / "o3"), capsys, "no images")
    _one_line_error(_args(arch_file, empty, tmp_path / "o4", head="fasterrcnn"), capsys, "does not serve segmentation")
    (tmp_path / "bad" / "annotations").mkdir(parents=True)
    (tmp_path / "bad" / "annotations" / "instances_x.json").write_text("{not json")
    _one_line_error(_args(arch_file, tmp_path / "bad", tmp_path / "o5", fmt="coco"), capsys, "not COCO JSON")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_masks_that_do_not_match_their_images_are_one_line_errors(arch_file, shared_data, tmp_path, capsys):
    data = _pennfudan_copy(shared_data, tmp_path)
    mask = next((data / "PedMasks").glob("*.png"))
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(mask)
    _one_line_error(_args(arch_file, data, tmp_path / "o1"), capsys, "masks must match their images", mask.name)
    mask.unlink()
    _one_line_error(_args(arch_file, data, tmp_path / "o2"), capsys, "has no mask")


def test_an_image_or_mask_that_cannot_be_decoded_is_a_one_line_error(arch_file, shared_data, tmp_path, capsys):
    data = _pennfudan_copy(shared_data, tmp_path)
    image = sorted((data / "PNGImages").glob("*.png"))[0]
    image.write_bytes(b"not a png")
    _one_line_error(_args(arch_file, data, tmp_path / "o1"), capsys, "cannot read image", image.name)
    data = _pennfudan_copy(shared_data, tmp_path / "again")
    mask = sorted((data / "PedMasks").glob("*.png"))[0]
    mask.write_bytes(b"not a png either")
    _one_line_error(_args(arch_file, data, tmp_path / "o2"), capsys, "cannot read mask", mask.name)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_coco_image_listed_but_missing_is_a_one_line_error(arch_file, tmp_path, capsys):
    folder = tmp_path / "coco"
    (folder / "annotations").mkdir(parents=True)
    (folder / "images").mkdir()
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}], "annotations": [],
           "categories": [{"id": 1, "name": "thing"}]}
    (folder / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    _one_line_error(_args(arch_file, folder, tmp_path / "o", task="detection", head="ssdlite", fmt="coco"), capsys,
                    "a.jpg", "missing")


def test_a_lut_that_does_not_cover_the_resolution_is_refused_before_training(arch_file, tmp_path, capsys):
    lut = next((ROOT / "hwnas" / "latency_tables").glob("*_ort-cpu_t1.json"))  # the shipped fbnet@224 table
    argv = _args("preset:fbnet_c", tmp_path, tmp_path / "o", "--latency", "--lut", str(lut))
    _one_line_error(argv, capsys, "64px")
    assert not (tmp_path / "o").exists()
