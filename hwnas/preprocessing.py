"""The preprocessing contract: how an image becomes a network input, decided by the training data
and carried with the weights (model.pt) and the exported ONNX (metadata), so that training,
int8 calibration and deploy/ all feed a network what it was trained on.

Pixels: RGB in [0, 1]; resized to R x R by `resize` ('stretch': straight to R x R, as every
training source does; 'crop': shorter side to R, then a centre crop), bilinear; then
(x - mean) / std per channel. The format is hwnas/schemas/preprocessing.schema.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import HwnasError
from .schemas import first_error

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("stretch", "crop")
#: ONNX metadata keys (deploy/runners.py reads the same names)
META_KEYS = {"mean": "hwnas.mean", "std": "hwnas.std", "resize": "hwnas.resize", "interpolation": "hwnas.interpolation"}


@dataclass(frozen=True)
class Preprocessing:
    """Normalisation and resize policy of a network's inputs."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "stretch"
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "resize": self.resize, "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: object, source: str = "preprocessing") -> "Preprocessing":
        problem = first_error(data, "preprocessing")
        if problem:
            raise HwnasError(f"{source}: preprocessing {problem}; retrain or re-export to write a valid one")
        return cls(tuple(map(float, data["mean"])), tuple(map(float, data["std"])), data["resize"], data["interpolation"])

    def metadata(self) -> dict[str, str]:
        """ONNX metadata_props entries (strings)."""
        doc = self.to_dict()
        return {META_KEYS[k]: json.dumps(v) if isinstance(v, list) else v for k, v in doc.items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str = "ONNX metadata") -> "Preprocessing":
        """The contract from ONNX metadata; files exported before it existed get ImageNet + crop."""
        if META_KEYS["mean"] not in props:
            return cls(resize="crop")
        try:
            doc = {k: json.loads(props[m]) if k in ("mean", "std") else props.get(m, "crop" if k == "resize" else "bilinear")
                   for k, m in META_KEYS.items()}
        except (json.JSONDecodeError, TypeError):
            raise HwnasError(f"{source}: malformed hwnas.mean/hwnas.std metadata; re-export the model") from None
        return cls.from_dict(doc, source)


IMAGENET = Preprocessing()


def legacy_preprocessing(data_name: str | None) -> Preprocessing:
    """What a version-1 weights file (written before the contract) was trained with: the digits
    source normalised with 0.5/0.5, every other source with ImageNet's statistics."""
    if data_name == "digits":
        return Preprocessing((0.5,) * 3, (0.5,) * 3)
    return IMAGENET
