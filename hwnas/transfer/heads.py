"""Task heads from torchvision's parts on a `BackboneSource`: Faster R-CNN (FPN) and SSDLite for
detection, LR-ASPP and DeepLabV3 for semantic segmentation.

Every head takes images in [0, 1]: detection models normalise inside their transform,
segmentation models get a `Normalize` layer in front, so the exported graph holds the whole
preprocessing. Images are square at `resolution` (the data pipeline resizes them), which keeps
one LUT resolution per task model.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block, _normal_init
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.lraspp import LRASPPHead
from torchvision.ops import MultiScaleRoIAlign

from ..errors import HwnasError
from .backbone import BackboneSource, FeatureBackbone, with_fpn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TASKS = ("detection", "segmentation")


class HeadError(HwnasError):
    """An unknown head, or a head that does not serve the requested task."""


@dataclass(frozen=True)
class HeadSettings:
    """Sizes of the heads (small defaults: mobile backbones, few classes, CPU training)."""

    fpn_channels: int = 128
    box_head_size: int = 256  # Faster R-CNN's two-layer box MLP (torchvision: 1024; ROI cost dominates on CPU)
    ssd_extra_width: float = 0.5  # of torchvision's 512/256/256/128 extra-block widths
    lraspp_channels: int = 128
    deeplab_rates: tuple[int, ...] = (3, 6, 9)  # DeepLab's 6/12/18 at output stride 16, halved for 32


class Normalize(nn.Module):
    """ImageNet normalisation as a layer (exported with the model)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _last(source: BackboneSource, count: int) -> list[int]:
    n = len(source.levels)
    return list(range(max(0, n - count), n))


def fasterrcnn(source: BackboneSource, num_classes: int, resolution: int, settings: HeadSettings) -> nn.Module:
    """Faster R-CNN on the last (up to) three maps + FPN: one anchor size per level (4x its
    stride), the same three aspect ratios at every level, RoIAlign on the FPN's map names."""
    picks = _last(source, 3)
    backbone = with_fpn(source.build(picks, [str(i) for i in range(len(picks))]), settings.fpn_channels)
    sizes = tuple((4 * r,) for r in backbone.reductions)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(sizes))
    roi_pool = MultiScaleRoIAlign(featmap_names=list(backbone.names[:-1]), output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(settings.fpn_channels * 7 * 7, settings.box_head_size)
    return FasterRCNN(
        backbone, num_classes=None, min_size=resolution, max_size=resolution, image_mean=list(MEAN),
        image_std=list(STD), rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head,
        box_predictor=FastRCNNPredictor(settings.box_head_size, num_classes),
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=150, rpn_score_thresh=0.05,
        box_batch_size_per_image=128,
    )


class SSDLiteFeatures(nn.Module):
    """Backbone maps (the last two) followed by SSDLite's extra blocks, as one OrderedDict."""

    def __init__(self, backbone: FeatureBackbone, widths: tuple[int, ...]):
        super().__init__()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        self.backbone = backbone
        chans = [backbone.out_channels[-1], *widths]
        self.extra = nn.ModuleList(_extra_block(a, b, norm) for a, b in zip(chans[:-1], chans[1:]))
        _normal_init(self.extra)
        self.out_channels = list(backbone.out_channels) + list(widths)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = list(self.backbone(x).values())
        x = maps[-1]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def ssdlite(source: BackboneSource, num_classes: int, resolution: int, settings: HeadSettings) -> nn.Module:
    """SSDLite: the last two backbone maps plus four extra blocks, `DefaultBoxGenerator` sized to
    those six maps, `SSDLiteHead` on their channels."""
    picks = _last(source, 2)
    widths = tuple(max(16, int(w * settings.ssd_extra_width)) for w in (512, 256, 256, 128))
    features = SSDLiteFeatures(source.build(picks, [str(i) for i in range(len(picks))]), widths)
    n_maps = len(features.out_channels)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(n_maps)], min_ratio=0.2, max_ratio=0.95)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead(features.out_channels, anchors.num_anchors_per_location(), num_classes, norm)
    return SSD(features, anchors, (resolution, resolution), num_classes, image_mean=list(MEAN), image_std=list(STD),
               head=head, score_thresh=0.001, nms_thresh=0.55, detections_per_img=100, topk_candidates=300)


class LRASPPModel(nn.Module):
    """torchvision's LRASPPHead on maps `low` (stride 8) and `high` (the last), normalisation in front."""

    def __init__(self, backbone: FeatureBackbone, num_classes: int, inter_channels: int):
        super().__init__()
        self.normalize = Normalize()
        self.backbone = backbone
        low, high = backbone.out_channels
        self.classifier = LRASPPHead(low, high, num_classes, inter_channels)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out = self.classifier(self.backbone(self.normalize(x)))
        return OrderedDict(out=F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False))


def _low_level(source: BackboneSource) -> int:
    """The map at stride 8 (MobileNetV3's choice), else the deepest one before the last."""
    last = len(source.levels) - 1
    if last < 1:
        raise HeadError(f"LR-ASPP needs two feature maps; backbone {source.name} returns {last + 1}")
    at8 = [i for i, lv in enumerate(source.levels) if lv.reduction == 8 and i < last]
    return at8[0] if at8 else last - 1


def lraspp(source: BackboneSource, num_classes: int, resolution: int, settings: HeadSettings) -> nn.Module:
    backbone = source.build([_low_level(source), len(source.levels) - 1], ["low", "high"])
    return LRASPPModel(backbone, num_classes, settings.lraspp_channels)


class DeepLabModel(nn.Module):
    """torchvision's DeepLabHead (ASPP) on the last map, normalisation in front."""

    def __init__(self, backbone: FeatureBackbone, num_classes: int, rates: tuple[int, ...]):
        super().__init__()
        self.normalize = Normalize()
        self.backbone = backbone
        self.classifier = DeepLabHead(backbone.out_channels[-1], num_classes, rates)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out = self.classifier(self.backbone(self.normalize(x))["out"])
        return OrderedDict(out=F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False))


def deeplabv3(source: BackboneSource, num_classes: int, resolution: int, settings: HeadSettings) -> nn.Module:
    backbone = source.build([len(source.levels) - 1], ["out"])
    return DeepLabModel(backbone, num_classes, settings.deeplab_rates)


# head name -> (task, builder(source, num_classes incl. background, resolution, settings))
HEADS = {
    "fasterrcnn": ("detection", fasterrcnn),
    "ssdlite": ("detection", ssdlite),
    "lraspp": ("segmentation", lraspp),
    "deeplabv3": ("segmentation", deeplabv3),
}


def head_task(head: str) -> str:
    if head not in HEADS:
        raise HeadError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    return HEADS[head][0]


def check_head(task: str, head: str) -> None:
    if task not in TASKS:
        raise HeadError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if head_task(head) != task:
        fits = [h for h, (t, _) in HEADS.items() if t == task]
        raise HeadError(f"head {head!r} does not serve {task}; for {task} choose one of: {', '.join(fits)}")


def build_task_model(source: BackboneSource, head: str, num_classes: int, resolution: int,
                     settings: HeadSettings | None = None) -> nn.Module:
    """The task model of `head` on `source`; `num_classes` counts the background class."""
    if num_classes < 2:
        raise HeadError(f"num_classes must count the background and at least one class, got {num_classes}")
    head_task(head)
    return HEADS[head][1](source, num_classes, resolution, settings or HeadSettings())
