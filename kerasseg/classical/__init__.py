"""Classical segmentation as Keras layers (thresholds, local thresholds, k-means, mean shift,
edges, region growing, connected components, watershed), and their model builders, each
registered where it is defined."""

from kerasseg.classical.edges import Canny, GradientMagnitude, LaplacianOfGaussian
from kerasseg.classical.kmeans import KMeansSegmentation
from kerasseg.classical.local_threshold import AdaptiveThreshold, NiblackThreshold, SauvolaThreshold
from kerasseg.classical.meanshift import MeanShiftSegmentation
from kerasseg.classical.region import ConnectedComponents, RegionGrowing
from kerasseg.classical.threshold import (
    IsodataThreshold,
    LiThreshold,
    MeanThreshold,
    MinimumThreshold,
    MultiOtsuThreshold,
    OtsuThreshold,
    TriangleThreshold,
    YenThreshold,
)
from kerasseg.classical.watershed import SeededWatershed

__all__ = [
    "AdaptiveThreshold",
    "Canny",
    "ConnectedComponents",
    "GradientMagnitude",
    "IsodataThreshold",
    "KMeansSegmentation",
    "LaplacianOfGaussian",
    "LiThreshold",
    "MeanShiftSegmentation",
    "MeanThreshold",
    "MinimumThreshold",
    "MultiOtsuThreshold",
    "NiblackThreshold",
    "OtsuThreshold",
    "RegionGrowing",
    "SauvolaThreshold",
    "SeededWatershed",
    "TriangleThreshold",
    "YenThreshold",
]
