"""Keras layers: classical segmentation methods and input preprocessing."""

from kerasseg.layers.edges import Canny, GradientMagnitude, LaplacianOfGaussian
from kerasseg.layers.kmeans import KMeansSegmentation
from kerasseg.layers.local_threshold import AdaptiveThreshold, NiblackThreshold, SauvolaThreshold
from kerasseg.layers.meanshift import MeanShiftSegmentation
from kerasseg.layers.preprocessing import ImagePreprocessing
from kerasseg.layers.region import ConnectedComponents, RegionGrowing
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
from kerasseg.layers.watershed import SeededWatershed

__all__ = [
    "AdaptiveThreshold",
    "ConnectedComponents",
    "NiblackThreshold",
    "RegionGrowing",
    "SauvolaThreshold",
    "SeededWatershed",
    "Canny",
    "GradientMagnitude",
    "LaplacianOfGaussian",
    "ImagePreprocessing",
    "KMeansSegmentation",
    "MeanShiftSegmentation",
    "IsodataThreshold",
    "LiThreshold",
    "MeanThreshold",
    "MinimumThreshold",
    "MultiOtsuThreshold",
    "OtsuThreshold",
    "TriangleThreshold",
    "YenThreshold",
]
