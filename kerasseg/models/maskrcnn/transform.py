"""Input transform of torchvision's `GeneralizedRCNNTransform` at inference, for NHWC batches.

Images arrive as a zero-padded batch (B, H, W, 3) of values 0..255 together with each image's
real (height, width). Each image is scaled to [0, 1], normalised with the ImageNet mean and
standard deviation, resized bilinearly (no antialias, align_corners=False) so that its short
side is `min_size` unless its long side would exceed `max_size`, and the batch is zero-padded
at the bottom/right to a multiple of `size_divisible`. Output sizes follow torchvision:
floor(side * scale) with scale = min(min_size / short, max_size / long) in float64.
"""

import keras
import tensorflow as tf
from keras import ops

from kerasseg.ops.checks import check_positive_int

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DetectionTransform", "padded_size", "resized_sizes"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_sizes(image_sizes, min_size=800, max_size=1333):
    """int32 (B, 2) sizes after the resize, from int (B, 2) original (height, width)."""
    sizes = ops.cast(image_sizes, "float64")
    short = ops.min(sizes, axis=1, keepdims=True)
    long = ops.max(sizes, axis=1, keepdims=True)
    scale = ops.minimum(float(min_size) / short, float(max_size) / long)
    return ops.cast(ops.floor(sizes * scale), "int32")


def padded_size(sizes, size_divisible=32):
    """The (height, width) of the padded batch: the largest size, rounded up."""
    largest = ops.max(sizes, axis=0)
    return ops.cast(ops.ceil(ops.cast(largest, "float32") / size_divisible), "int32") * (
        size_divisible
    )


@keras.saving.register_keras_serializable(package="kerasseg")
class DetectionTransform(keras.layers.Layer):
    """Normalise, resize and pad a batch like torchvision's detection transform (inference).

    Call with `(images, image_sizes)`: images (B, H, W, 3) float 0..255, image_sizes int32
    (B, 2). Returns `(batch, resized)`: the normalised padded batch (B, H', W', 3), H' and W'
    multiples of `size_divisible`, and int32 (B, 2) resized image sizes.

    Args:
        min_size: the short side after the resize (torchvision: 800).
        max_size: the largest long side after the resize (torchvision: 1333).
        size_divisible: the padded batch's height and width are multiples of it (32).
    """

    def __init__(self, min_size=800, max_size=1333, size_divisible=32, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        min_size = check_positive_int(min_size, "min_size")
        max_size = check_positive_int(max_size, "max_size")
        if max_size < min_size:
            raise ValueError(f"`max_size` ({max_size}) must be >= `min_size` ({min_size}).")
        self.min_size = min_size
        self.max_size = max_size
        self.size_divisible = check_positive_int(size_divisible, "size_divisible")

    def call(self, images, image_sizes, training=None):
        images = ops.cast(images, "float32")
        mean = ops.convert_to_tensor(IMAGENET_MEAN, "float32")
        std = ops.convert_to_tensor(IMAGENET_STD, "float32")
        resized = resized_sizes(image_sizes, self.min_size, self.max_size)
        canvas = padded_size(resized, self.size_divisible)

        def one(index):
            height, width = image_sizes[index, 0], image_sizes[index, 1]
            image = (images[index, :height, :width] / 255.0 - mean) / std
            image = tf.image.resize(
                image[None], resized[index], method="bilinear", antialias=False
            )[0]
            return tf.pad(
                image,
                [[0, canvas[0] - resized[index, 0]], [0, canvas[1] - resized[index, 1]], [0, 0]],
            )

        batch = tf.map_fn(
            one,
            tf.range(tf.shape(images)[0]),
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32),
        )
        return batch, resized

    def compute_output_spec(self, images, image_sizes, training=None):
        batch = images.shape[0]
        return (
            keras.KerasTensor((batch, None, None, 3), dtype="float32"),
            keras.KerasTensor((batch, 2), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            min_size=self.min_size, max_size=self.max_size, size_divisible=self.size_divisible
        )
        return config
