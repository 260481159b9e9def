"""Input normalisation of pretrained encoders as a Keras layer.

Each keras.applications encoder was trained on images normalised one way. The layer takes
images with values in 0..255 (any numeric dtype) and applies the normalisation by name, so
it can live inside a model or an exported SavedModel. For channel counts other than 3, the
per-channel statistics are averaged, matching how `kerasseg.models.encoders` adapts the first
convolution of a pretrained encoder.
"""

import math

import keras
from keras import ops

__all__ = ["CAFFE_MEAN_BGR", "IMAGENET_MEAN", "IMAGENET_STD", "MODES", "ImagePreprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

MODES = {
    "none": "identity: the model takes images as they are",
    "unit": "x / 255, to [0, 1]",
    "tf": "x / 127.5 - 1, to [-1, 1] (keras.applications 'tf' mode)",
    "efficientnet_v2": "x / 128 - 1, what keras.applications EfficientNetV2S/M/L apply",
    "torch": "(x / 255 - ImageNet mean) / ImageNet std (keras.applications 'torch' mode)",
    "caffe": "RGB to BGR, minus the ImageNet BGR mean, no scaling ('caffe' mode)",
    "efficientnet": (
        "(x / 255 - ImageNet mean) / std / sqrt(std), what keras.applications EfficientNetB0..B7 "
        "apply inside the model when loaded with ImageNet weights"
    ),
}


def _per_channel(values, channels):
    """`values` for `channels` channels: as they are for as many, else their mean repeated."""
    if channels == len(values):
        return list(values)
    mean = sum(values) / len(values)
    return [mean] * channels


@keras.saving.register_keras_serializable(package="kerasseg")
class ImagePreprocessing(keras.layers.Layer):
    """Normalise 0..255 images the way an encoder expects.

    Every mode is `y = x * scale + offset` per channel (after an RGB -> BGR flip for
    "caffe" on 3 channels), computed in float32 whatever the dtype policy. For channel
    counts other than 3 the per-channel statistics are averaged.

    Args:
        mode: one of `kerasseg.preprocessing.MODES`: "none", "unit", "tf",
            "efficientnet_v2", "torch", "caffe", "efficientnet".
        **kwargs: arguments of `keras.layers.Layer` (name, ...).

    Raises:
        ValueError: an unknown `mode`, or (when built) an unknown channel count.

    Example:
        >>> x = ImagePreprocessing("torch")(images)  # images: (batch, H, W, 3) in 0..255
    """

    def __init__(self, mode="none", **kwargs):
        # Always float32: under mixed precision, bfloat16 would round 0..255 values by up to 1.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {sorted(MODES)}; got {mode!r}.")
        self.mode = mode
        self._scale = None
        self._offset = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "`ImagePreprocessing` needs a known channel count (last axis); got input shape "
                f"{tuple(input_shape)}."
            )
        # Every mode is y = x * scale + offset per channel (after an optional RGB->BGR flip).
        if self.mode == "none":
            scale, offset = [1.0] * channels, [0.0] * channels
        elif self.mode == "unit":
            scale, offset = [1 / 255] * channels, [0.0] * channels
        elif self.mode == "tf":
            scale, offset = [1 / 127.5] * channels, [-1.0] * channels
        elif self.mode == "efficientnet_v2":
            scale, offset = [1 / 128] * channels, [-1.0] * channels
        elif self.mode == "caffe":
            mean = _per_channel(CAFFE_MEAN_BGR, channels)
            scale, offset = [1.0] * channels, [-m for m in mean]
        else:
            mean = _per_channel(IMAGENET_MEAN, channels)
            std = _per_channel(IMAGENET_STD, channels)
            if self.mode == "efficientnet":
                divisor = [s * math.sqrt(s) for s in std]
            else:
                divisor = std
            scale = [1 / (255 * d) for d in divisor]
            offset = [-m / d for m, d in zip(mean, divisor, strict=True)]
        self._flip = self.mode == "caffe" and channels == 3
        self._scale = scale
        self._offset = offset

    def call(self, images, training=None):
        x = ops.cast(images, self.compute_dtype)
        if self._flip:
            x = ops.flip(x, axis=-1)
        scale = ops.convert_to_tensor(self._scale, dtype=self.compute_dtype)
        offset = ops.convert_to_tensor(self._offset, dtype=self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config
