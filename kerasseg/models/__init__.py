"""Segmentation architectures: one module (or folder) per architecture, each registering
itself with `kerasseg.registry.register_model` where it is defined."""

from kerasseg.models import (  # noqa: F401 (each module registers its architecture)
    attention_unet,
    deeplab,
    fpn,
    linknet,
    maskrcnn,
    pspnet,
    segformer,
    unetplusplus,
)
from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import CenterCropLike
from kerasseg.models.encoders import ENCODERS, build_encoder
from kerasseg.models.unet import unet

__all__ = ["ENCODERS", "CenterCropLike", "SegmentationModel", "build_encoder", "unet"]
