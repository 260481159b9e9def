"""Every Keras layer a user builds with: the classical segmentation layers and the input
preprocessing layer, in one namespace (as `keras.layers`)."""

from kerasseg.classical import *  # noqa: F403
from kerasseg.classical import __all__ as _classical_names
from kerasseg.preprocessing import ImagePreprocessing

__all__ = [*_classical_names, "ImagePreprocessing"]
