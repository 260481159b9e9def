"""kerasseg: a Keras 3 model zoo for image segmentation.

import kerasseg
kerasseg.list_models()
model = kerasseg.load("unet", encoder="resnet50", num_classes=3)
dataset, info = kerasseg.datasets.isbi2012("data/isbi2012-membrane")
kerasseg.export(model, "serving/unet", version=1)   # TF-Serving SavedModel
"""

import importlib

__version__ = "0.1.0"

# models and classical register their architectures in the model table; they, layers,
# losses, metrics and inference.tta register their serializable Keras classes; samples holds
# the built-in demo images (kerasseg.samples.load_sample).
from kerasseg import classical, layers, losses, metrics, models, registry, samples  # noqa: F401
from kerasseg.inference import tta  # noqa: F401
from kerasseg.registry import (  # noqa: F401
    get_entry,
    list_models,
    load,
    preprocessing_layer,
    register_model,
)

registry.register_manifest_presets()  # the shipped presets, once their architectures are in
# The presets of public checkpoints (torchvision, Hugging Face), converted on first use, and
# torchvision's ImageNet weights of the "resnet18" / "resnet34" encoders.
from kerasseg.convert import encoder_weights as _encoder_weights  # noqa: E402, F401
from kerasseg.convert import presets as _public_presets  # noqa: E402, F401

__all__ = ["get_entry", "list_models", "load", "preprocessing_layer", "register_model"]

# TensorFlow-only parts, imported when first used so that the models stay backend-neutral.
_LAZY_MODULES = (
    "convert",
    "data",
    "datasets",
    "evaluation",
    "export",
    "training",
)


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"kerasseg.{name}")
    raise AttributeError(f"module 'kerasseg' has no attribute {name!r}")
