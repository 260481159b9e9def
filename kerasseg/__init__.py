"""kerasseg: a Keras 3 model zoo for image segmentation.

import kerasseg
kerasseg.list_models()
model = kerasseg.load("unet", encoder="resnet50", num_classes=3)
"""

__version__ = "0.1.0"

from kerasseg import layers, models  # noqa: F401  (registers serializable classes)
from kerasseg.registry import (  # noqa: F401
    get_entry,
    list_models,
    load,
    preprocessing_layer,
    register_model,
)

__all__ = ["get_entry", "list_models", "load", "preprocessing_layer", "register_model"]
