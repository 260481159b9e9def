"""Keras layers: classical segmentation methods and input preprocessing."""

from kerasseg.layers.preprocessing import ImagePreprocessing
from kerasseg.layers.threshold import OtsuThreshold

__all__ = ["ImagePreprocessing", "OtsuThreshold"]
