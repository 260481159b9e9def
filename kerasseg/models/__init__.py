"""Segmentation architectures."""

from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import CenterCropLike
from kerasseg.models.encoders import ENCODERS, build_encoder
from kerasseg.models.unet import unet

__all__ = ["ENCODERS", "CenterCropLike", "SegmentationModel", "build_encoder", "unet"]
