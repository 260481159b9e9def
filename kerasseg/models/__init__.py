"""Segmentation architectures: one module (or folder) per architecture, each registering
itself with `kerasseg.registry.register_model` where it is defined.

Every module and folder here is imported when `kerasseg.models` is, so that adding an
architecture is adding its file: nothing else names it.
"""

import importlib
import pkgutil

from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import CenterCropLike
from kerasseg.models.encoders import ENCODERS, build_encoder
from kerasseg.models.unet import unet

__all__ = ["ENCODERS", "CenterCropLike", "SegmentationModel", "build_encoder", "unet"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
