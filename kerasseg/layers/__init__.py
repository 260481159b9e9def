"""Keras layers: classical segmentation methods and input preprocessing."""

from kerasseg.layers.preprocessing import ImagePreprocessing
from kerasseg.layers.threshold import (
    IsodataThreshold,
    LiThreshold,
    MeanThreshold,
    MinimumThreshold,
    MultiOtsuThreshold,
    OtsuThreshold,
    TriangleThreshold,
    YenThreshold,
)

__all__ = [
    "ImagePreprocessing",
    "IsodataThreshold",
    "LiThreshold",
    "MeanThreshold",
    "MinimumThreshold",
    "MultiOtsuThreshold",
    "OtsuThreshold",
    "TriangleThreshold",
    "YenThreshold",
]
