"""Transfer: searched backbones under detection and segmentation heads.

`backbone` (an architecture or torchvision's MobileNetV3 as a multi-scale backbone), `heads`
(Faster R-CNN, SSDLite, LR-ASPP, DeepLabV3 from torchvision's parts), `data` (COCO JSON,
Penn-Fudan), `metrics` (torchmetrics mAP and mean IoU), `pipeline` (fine-tune, evaluate,
resume), `export` (ONNX of the whole task model, parity), `latency` (ONNX Runtime timing, the
head's cost, the LUT's backbone prediction), `plots` and `outputs` (what a run writes).
"""
