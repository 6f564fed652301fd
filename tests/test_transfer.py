"""Transfer to detection and segmentation: backbones, heads, data, metrics, ONNX and latency."""

from collections import OrderedDict

import pytest
import torch

from hwnas.core.arch import Arch
from hwnas.core.presets import resolve_arch
from hwnas.errors import ArchError, BackendError
from hwnas.core.models import arch_model
from hwnas.core.spaces import get_space
from hwnas.transfer.backbone import arch_source, mobilenet_v3_source
from hwnas.transfer.data import IGNORE, load_task_data
from hwnas.transfer.export import export_task_onnx, task_parity
from hwnas.transfer.heads import HEADS, HeadError, build_task_model, check_head
from hwnas.transfer.latency import backbone_of, lut_backbone_ms, task_head_cost_ms, worst_case
from hwnas.transfer.metrics import DetectionMetric, SegmentationMetric
from hwnas.transfer.pipeline import TransferConfig, evaluate, train_epoch
from hwnas.core.weights import save_weights
from hwnas.profilers import StatsConfig

TINY = {"layer0": "k3_e1", "layer1": "k3_e3", "layer2": "k3_e1"}
RES = 64


@pytest.fixture(scope="module")
def tiny():
    return Arch.create(get_space("tiny"), TINY)


@pytest.fixture
def pennfudan(shared_data):
    root = shared_data / "pennfudan"
    return {task: load_task_data(root, "pennfudan", task, RES, max_images=3) for task in ("detection", "segmentation")}


# --- metrics on hand-made cases -------------------------------------------------------------------
def _det(boxes, scores=None, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    n = len(boxes)
    return {"boxes": boxes, "scores": torch.tensor(scores or [0.9] * n), "labels": torch.tensor(labels or [1] * n)}


def test_detection_map_is_one_for_a_perfect_prediction_and_less_for_a_shifted_box():
    truth = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 5.0, 90.0, 40.0]]), "labels": torch.tensor([1, 1])}]
    perfect = DetectionMetric()
    perfect.update([_det([[10, 10, 50, 60], [60, 5, 90, 40]])], truth)
    assert perfect.compute()["map"] == pytest.approx(1.0)
    shifted = DetectionMetric()
    shifted.update([_det([[18, 10, 58, 60], [60, 5, 90, 40]])], truth)
    result = shifted.compute()
    assert 0.0 < result["map"] < 1.0 and result["map_50"] == pytest.approx(1.0)
    wrong_class = DetectionMetric()
    wrong_class.update([_det([[10, 10, 50, 60], [60, 5, 90, 40]], labels=[2, 2])], truth)
    assert wrong_class.compute()["map"] == 0.0


def test_a_crowd_target_is_not_counted_as_a_miss():
    truth = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [0.0, 0.0, 100.0, 100.0]]),
              "labels": torch.tensor([1, 1]), "iscrowd": torch.tensor([0, 1])}]
    metric = DetectionMetric()
    metric.update([_det([[10, 10, 50, 60]])], truth)
    assert metric.compute()["map"] == pytest.approx(1.0)


def test_mean_iou_is_one_when_perfect_less_when_shifted_and_ignores_crowd_pixels():
    mask = torch.zeros(1, 8, 8, dtype=torch.int64)
    mask[:, 2:6, 2:6] = 1
    perfect = SegmentationMetric(3)
    perfect.update(mask.clone(), mask)
    assert perfect.compute()["miou"] == pytest.approx(1.0)  # class 2 occurs nowhere: not averaged in
    shifted = SegmentationMetric(3)
    shifted.update(torch.roll(mask, 1, dims=2), mask)
    # person: 12 of 20 pixels in the union; background: 44 of 52
    assert shifted.compute()["miou"] == pytest.approx((12 / 20 + 44 / 52) / 2)
    ignored = mask.clone()
    ignored[:, 0, :] = IGNORE
    prediction = mask.clone()
    prediction[:, 0, :] = 1  # wrong only where the target says "ignore"
    metric = SegmentationMetric(3)
    metric.update(prediction, ignored)
    assert metric.compute()["miou"] == pytest.approx(1.0)


# --- backbones and heads --------------------------------------------------------------------------
def test_backbones_follow_torchvision_contract(tiny):
    source = arch_source(tiny, resolution=RES)
    assert [lv.reduction for lv in source.levels] == [2, 4]
    backbone = source.build([0, 1], ["low", "high"])
    out = backbone(torch.rand(1, 3, RES, RES))
    assert isinstance(out, OrderedDict) and list(out) == ["low", "high"]
    assert [t.shape[1] for t in out.values()] == backbone.out_channels == [8, 16]
    reference = mobilenet_v3_source()
    assert [lv.reduction for lv in reference.levels] == [2, 4, 8, 16, 32]
    assert reference.levels[-1].channels == 960


def test_fasterrcnn_anchors_and_roi_align_fit_the_fpn_maps():
    model = build_task_model(arch_source(resolve_arch("preset:fbnet_c"), resolution=128), "fasterrcnn", 2, 128)
    names = list(model.backbone(torch.rand(1, 3, 128, 128)))
    assert names == ["0", "1", "2", "pool"]  # strides 8, 16, 32 and the FPN's pooled level
    anchors = model.rpn.anchor_generator
    assert [s for (s,) in anchors.sizes] == [32, 64, 128, 256]  # one size per level: 4x its stride
    assert len(set(anchors.num_anchors_per_location())) == 1  # the same count at every level (one RPN head)
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]


def test_ssdlite_boxes_and_lraspp_maps_sit_on_the_right_strides():
    source = arch_source(resolve_arch("preset:fbnet_c"), resolution=128)
    ssd = build_task_model(source, "ssdlite", 2, 128)
    assert [lv.reduction for lv in ssd.backbone.backbone.levels] == [16, 32]  # then four extra blocks
    assert len(ssd.anchor_generator.aspect_ratios) == len(ssd.backbone.out_channels) == 6
    lraspp = build_task_model(source, "lraspp", 2, 128)
    assert [lv.reduction for lv in lraspp.backbone.levels] == [8, 32]
    assert lraspp(torch.rand(1, 3, 128, 128))["out"].shape == (1, 2, 128, 128)


def test_task_and_head_must_agree():
    check_head("segmentation", "lraspp")
    with pytest.raises(HeadError, match="does not serve detection"):
        check_head("detection", "deeplabv3")
    with pytest.raises(HeadError, match="unknown head"):
        check_head("detection", "yolo")


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_trains_a_step_and_evaluates_on_real_pennfudan_images(head, tiny, pennfudan, tmp_path):
    task = HEADS[head][0]
    data = pennfudan[task]
    cfg = TransferConfig("unused", task, head, "unused", "pennfudan", epochs=1, resolution=RES, batch_size=2, lr=1e-3)
    torch.manual_seed(0)
    model = build_task_model(arch_source(tiny, resolution=RES), head, data.num_classes, RES)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = train_epoch(model, optimizer, data, cfg, epoch=0, progress=False)
    assert loss > 0 and torch.isfinite(torch.tensor(loss))
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone") for k in changed)  # the backbone is fine-tuned, not frozen
    metrics = evaluate(model, data)
    key = "map" if task == "detection" else "miou"
    assert metrics["images"] == len(data.val) == 1
    assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0


def test_coco128_boxes_rle_crowd_and_a_training_step(shared_data):
    root = shared_data / "coco128"
    seg = load_task_data(root, "coco", "segmentation", RES, max_images=40)
    assert seg.num_classes == 81 and seg.class_names[1] == "person"
    masks = [t["mask"] for _, t in list(seg.train) + list(seg.val)]
    assert any((m == IGNORE).any() for m in masks)  # crowd RLE regions are ignored, not background
    assert any(((m > 0) & (m < IGNORE)).any() for m in masks)  # polygons decoded to classes
    det = load_task_data(root, "coco", "detection", RES, max_images=3)
    targets = [t for _, t in list(det.train) + list(det.val)]
    assert all(t["boxes"].shape[1] == 4 and (t["boxes"][:, 2:] > t["boxes"][:, :2]).all() for t in targets)
    assert all(0 <= t["boxes"].min() and t["boxes"].max() <= RES + 1e-3 for t in targets if len(t["boxes"]))
    cfg = TransferConfig("unused", "detection", "ssdlite", "unused", "coco", epochs=1, resolution=RES, batch_size=2)
    torch.manual_seed(0)
    model = build_task_model(arch_source(resolve_arch("preset:fbnet_c"), resolution=RES), "ssdlite", 81, RES)
    loss = train_epoch(model, torch.optim.AdamW(model.parameters()), det, cfg, epoch=0, progress=False)
    assert loss > 0
    assert evaluate(model, det)["images"] == len(det.val)


def test_backbone_starts_from_hwnas_train_weights(tiny, tmp_path):
    classifier = arch_model(tiny, num_classes=10)
    with torch.no_grad():
        classifier.conv_stem.weight.fill_(0.25)
    save_weights(tmp_path / "model.pt", tiny, classifier, 10, 32)
    backbone = arch_source(tiny, resolution=RES, weights=str(tmp_path / "model.pt")).build([1], ["out"])
    assert torch.equal(backbone.body.features.conv_stem.weight, classifier.conv_stem.weight)
    other = Arch.create(get_space("tiny"), {**TINY, "layer2": "skip"})
    with pytest.raises(ArchError, match="trained for architecture"):
        arch_source(other, resolution=RES, weights=str(tmp_path / "model.pt")).build([1], ["out"])


# --- ONNX and latency -----------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["ssdlite", "lraspp"])
def test_task_model_exports_to_onnx_with_parity(head, tiny, pennfudan):
    import onnx

    task = HEADS[head][0]
    torch.manual_seed(0)
    model = build_task_model(arch_source(tiny, resolution=RES), head, 2, RES).eval()
    onnx_bytes = export_task_onnx(model, task, head, tiny, "tiny.json", 2, RES)
    props = {p.key: p.value for p in onnx.load_from_string(onnx_bytes).metadata_props}
    assert props["hwnas.task"] == task and props["hwnas.arch_hash"] == tiny.hash
    images = [pennfudan[task].val[0][0], pennfudan[task].train[0][0]]
    parity = task_parity(model, onnx_bytes, task, images)
    assert parity.passed and parity.images == 2
    if task == "detection":  # a vacuous comparison of zero boxes would prove nothing
        with torch.no_grad():
            assert len(model([images[0]])[0]["boxes"]) > 0


def test_head_cost_is_measured_and_the_backbone_predicted_from_the_lut(tiny):
    cost = task_head_cost_ms(tiny, "fasterrcnn", RES, stats=StatsConfig.quick(), clock="thread")
    assert cost > 0.5  # RPN and RoI heads on 150 proposals: milliseconds, against microseconds of tiny's backbone
    with pytest.raises(BackendError, match="1 thread"):
        task_head_cost_ms(tiny, "fasterrcnn", RES, threads=2, clock="thread")
    from pathlib import Path

    import hwnas
    from hwnas.latency_tables.predictor import LatencyPredictor
    from hwnas.profilers.table import LatencyTable

    lut = next((Path(hwnas.__file__).parent / "latency_tables").glob("*_ort-cpu_t1.json"))  # the shipped table
    arch = resolve_arch("preset:fbnet_c")
    backbone = lut_backbone_ms(arch, str(lut), 224)
    whole = LatencyPredictor(LatencyTable.load(lut), get_space("fbnet", resolution=224)).latency_ms(arch)
    assert 0.5 * whole < backbone < whole  # the classifier head (1x1 conv to 1984, pool, fc) is left out
    with pytest.raises(Exception, match="160"):
        lut_backbone_ms(arch, str(lut), 160)


@pytest.mark.parametrize("head", ["fasterrcnn", "ssdlite"])
def test_detectors_are_timed_with_the_most_boxes_they_allow_whatever_their_weights(head, tiny):
    torch.manual_seed(0)
    model = build_task_model(arch_source(tiny, resolution=RES), head, 2, RES).eval()
    timed = worst_case(model)
    with torch.no_grad():
        out = timed([torch.rand(3, RES, RES)])[0]
    assert len(out["boxes"]) == 100  # detections_per_img
    if head == "fasterrcnn":
        assert model.rpn.score_thresh == 0.05 and timed.rpn.score_thresh == 0.0  # the original is untouched


def test_backbone_of_finds_the_feature_extractor(tiny):
    model = build_task_model(arch_source(tiny, resolution=RES), "deeplabv3", 3, RES)
    assert backbone_of(model) is model.backbone
