"""What names a base model: :class:`ModelSpec`, the few facts that rebuild it without code.

>>> ModelSpec("resnet20", num_classes=10, in_channels=1).to_dict()
{'name': 'resnet20', 'num_classes': 10, 'in_channels': 1}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from autoshrink.compression.timm_models import timm_image_size


class _Shapes(Protocol):
    """The shape facts of a dataset (:class:`~autoshrink.compression.data.DataSplits`)."""

    num_classes: int
    in_channels: int
    image_size: int


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a base model from scratch.

    Args:
        name: A zoo name (``resnet20``, ``smallcnn``), a torchvision classification model
            name (``resnet18``, ``mobilenet_v2``), a timm model ``timm:NAME``
            (``timm:efficientnet_b0``; needs ``autoshrink[timm]``), or a user factory
            ``path/to/file.py:fn``.
        num_classes: Width of the classifier output.
        in_channels: Channels of the input images.
        pretrained: Start from the hub's pretrained weights (timm only; needs a network).
        image_size: Input side a timm model built for one fixed input size (ViT, DeiT,
            Swin) is built for, as its ``img_size``; None: the model's own.
    """

    name: str
    num_classes: int = 10
    in_channels: int = 3
    pretrained: bool = False
    image_size: int | None = None

    @classmethod
    def for_data(cls, name: str, data: _Shapes) -> ModelSpec:
        """The spec of model ``name`` for a dataset's classes, channels and image size.

        ``image_size`` is set only for a timm model that is built for one fixed input size
        other than the dataset's (see :func:`.timm_models.timm_image_size`), so every
        other spec, and the cache keys made from it, stay as they were.
        """
        size = timm_image_size(name, data.image_size)
        return cls(name, data.num_classes, data.in_channels, image_size=size)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-ready dict (``pretrained``, ``image_size`` only when set).

        Leaving out the defaults keeps the dicts, and so the baseline cache keys and
        artifact headers, of every spec written before the fields existed.
        """
        data = asdict(self)
        if not self.pretrained:
            del data["pretrained"]
        if self.image_size is None:
            del data["image_size"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build a spec from :meth:`to_dict` output."""
        size = data.get("image_size")
        return cls(
            name=str(data["name"]),
            num_classes=int(data.get("num_classes", 10)),
            in_channels=int(data.get("in_channels", 3)),
            pretrained=bool(data.get("pretrained", False)),
            image_size=None if size is None else int(size),
        )
