"""Resizing layers of the decoders, with stock ops that trace for unknown sizes.

Keras's `UpSampling2D(interpolation="bilinear")` fails in graph mode when height and width
are unknown (Keras 3.15, TensorFlow backend), which `predict` on varying sizes and
`kerasseg.export` both need; these layers compute bilinear resizing and adaptive average
pooling as small matrix products instead (PyTorch `F.interpolate` / `AdaptiveAvgPool2d`
semantics, as segmentation_models.pytorch uses them), and `ResizeShorterSide`, the resize
of torchvision's semantic preset transform (``F.resize(img, [size], antialias=True)``).
"""

import keras
from keras import layers, ops

from kerasseg.ops.checks import check_int, is_int

__all__ = [
    "AdaptiveAveragePooling2D",
    "BroadcastLike",
    "ResizeLike",
    "ResizeShorterSide",
    "UpSamplingBilinear2D",
    "antialias_interpolation_matrix",
    "bilinear_resize",
    "interpolation_matrix",
    "shorter_side_size",
]


def interpolation_matrix(out_length, in_length, align_corners, dtype):
    """(out_length, in_length) 1-D bilinear weights, PyTorch `F.interpolate` semantics.

    align_corners=True: output i samples input i * (in - 1) / (out - 1); False: half-pixel
    centres, (i + 0.5) * in / out - 0.5 clamped to [0, in - 1]. Each row is the tent kernel
    max(0, 1 - |source - j|) over input positions j, so rows sum to 1.
    """
    out_f = ops.cast(out_length, "float32")
    in_f = ops.cast(in_length, "float32")
    position = ops.cast(ops.arange(out_length), "float32")
    if align_corners:
        source = position * ((in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0))
    else:
        source = ops.clip((position + 0.5) * (in_f / out_f) - 0.5, 0.0, in_f - 1.0)
    grid = ops.cast(ops.arange(in_length), "float32")
    weights = ops.relu(1.0 - ops.abs(source[:, None] - grid[None, :]))
    return ops.cast(weights, dtype)


def bilinear_resize(x, height, width, align_corners):
    """Resize (B, h, w, C) to (B, height, width, C) bilinearly; sizes may be tensors."""
    shape = ops.shape(x)
    rows = interpolation_matrix(height, shape[1], align_corners, x.dtype)
    cols = interpolation_matrix(width, shape[2], align_corners, x.dtype)
    x = ops.einsum("hi,bijc->bhjc", rows, x)
    return ops.einsum("wj,bhjc->bhwc", cols, x)


@keras.saving.register_keras_serializable(package="kerasseg")
class UpSamplingBilinear2D(layers.Layer):
    """Bilinear up-sampling by an integer factor, like PyTorch's `nn.UpsamplingBilinear2d`.

    `align_corners=True` (default, PyTorch's `UpsamplingBilinear2d` and smp's decoders) or
    False (half-pixel centres, `F.interpolate`'s default). Works with unknown height and
    width in graph mode, unlike Keras's `UpSampling2D(interpolation="bilinear")`.
    """

    def __init__(self, size=2, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        self.size = check_int(size, "size", 1)
        self.align_corners = bool(align_corners)

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        return bilinear_resize(
            inputs, shape[1] * self.size, shape[2] * self.size, self.align_corners
        )

    def compute_output_shape(self, input_shape):
        def scaled(n):
            return None if n is None else n * self.size

        return (input_shape[0], scaled(input_shape[1]), scaled(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "align_corners": self.align_corners}


def _adaptive_pool_matrix(length, bins, dtype):
    """(bins, length) averaging weights with PyTorch's AdaptiveAvgPool bin boundaries."""
    index = ops.arange(bins, dtype="int32")
    start = (index * length) // bins
    end = -((-(index + 1) * length) // bins)  # ceil((i + 1) * length / bins)
    position = ops.arange(length, dtype="int32")
    inside = ops.logical_and(position[None, :] >= start[:, None], position[None, :] < end[:, None])
    inside = ops.cast(inside, dtype)
    return inside / ops.sum(inside, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="kerasseg")
class AdaptiveAveragePooling2D(layers.Layer):
    """Average pooling to a fixed (bins, bins) grid, PyTorch `AdaptiveAvgPool2d` semantics.

    Bin i of n over a length L averages positions floor(i * L / n) to ceil((i + 1) * L / n)
    (exclusive), so any input size works, including sizes not divisible by n or smaller
    than n (bins then overlap). Computed as two small matrix products, with stock ops.
    """

    def __init__(self, bins, **kwargs):
        super().__init__(**kwargs)
        self.bins = check_int(bins, "bins", 1)

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        rows = _adaptive_pool_matrix(shape[1], self.bins, inputs.dtype)
        cols = _adaptive_pool_matrix(shape[2], self.bins, inputs.dtype)
        x = ops.einsum("ih,bhwc->biwc", rows, inputs)
        return ops.einsum("jw,biwc->bijc", cols, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


@keras.saving.register_keras_serializable(package="kerasseg")
class ResizeLike(layers.Layer):
    """Bilinear resize of the first input to the second's height and width.

    PyTorch's `F.interpolate(x, size, mode="bilinear", align_corners=...)`: with
    `align_corners=True` (the default) the corner pixels of input and output coincide; with
    False pixel centres are used (half-pixel). Works with unknown sizes.
    """

    def __init__(self, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, inputs, training=None):
        features, reference = inputs
        shape = ops.shape(reference)
        return bilinear_resize(features, shape[1], shape[2], align_corners=self.align_corners)

    def compute_output_shape(self, input_shapes):
        features, reference = input_shapes
        return (features[0], reference[1], reference[2], features[3])

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}


@keras.saving.register_keras_serializable(package="kerasseg")
class BroadcastLike(layers.Layer):
    """Broadcast a (B, 1, 1, C) map to the height and width of a reference (B, H, W, C')."""

    def call(self, inputs, training=None):
        pooled, reference = inputs
        shape = ops.shape(reference)
        return ops.broadcast_to(pooled, (shape[0], shape[1], shape[2], ops.shape(pooled)[3]))

    def compute_output_shape(self, input_shapes):
        pooled, reference = input_shapes
        return (reference[0], reference[1], reference[2], pooled[3])


def antialias_interpolation_matrix(out_length, in_length, dtype):
    """(out_length, in_length) 1-D weights of bilinear resizing with antialias.

    torch's ``F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)``
    (PIL's resampling): with ``scale = in_length / out_length``, output i is centred at
    ``(i + 0.5) * scale`` and weighs input j (centre j + 0.5) by the tent
    ``max(0, 1 - |j + 0.5 - centre| / max(scale, 1))``, normalised to sum 1. Up-sampling
    (scale <= 1) this is plain half-pixel bilinear interpolation with clamped edges;
    down-sampling widens the tent to the scale, so every input pixel counts.

    Args:
        out_length: the output length (int or scalar tensor).
        in_length: the input length (int or scalar tensor).
        dtype: the dtype of the returned matrix.

    Returns:
        A (out_length, in_length) tensor.
    """
    out_f = ops.cast(out_length, "float32")
    in_f = ops.cast(in_length, "float32")
    scale = in_f / out_f
    centre = (ops.cast(ops.arange(out_length), "float32") + 0.5) * scale
    position = ops.cast(ops.arange(in_length), "float32") + 0.5
    weights = ops.relu(1.0 - ops.abs(position[None, :] - centre[:, None]) / ops.maximum(scale, 1.0))
    weights = weights / ops.sum(weights, axis=1, keepdims=True)
    return ops.cast(weights, dtype)


def shorter_side_size(height, width, size):
    """(new height, new width) with the shorter side `size`, as ``F.resize(img, [size])``.

    The longer side becomes ``int(size * long / short)`` (rounded down); a square image
    becomes `size` x `size`. Python ints in, Python ints out; tensors give int32 tensors.
    """
    if is_int(height) and is_int(width):
        short, long = min(height, width), max(height, width)
        new_long = size * long // short
        return (new_long, size) if width <= height else (size, new_long)
    height = ops.cast(height, "int32")
    width = ops.cast(width, "int32")
    new_long = size * ops.maximum(height, width) // ops.minimum(height, width)
    portrait = width <= height
    return ops.where(portrait, new_long, size), ops.where(portrait, size, new_long)


@keras.saving.register_keras_serializable(package="kerasseg")
class ResizeShorterSide(layers.Layer):
    """Resize (B, H, W, C) images so the shorter side is `size`, keeping the aspect ratio.

    torchvision's ``F.resize(img, [size], interpolation=BILINEAR, antialias=True)`` on
    float tensors, what its ``SemanticSegmentation(resize_size=size)`` preset transform
    does first: the longer side becomes ``int(size * long / short)``, values are
    interpolated bilinearly with antialias (`antialias_interpolation_matrix`, separable:
    rows, then columns). torchvision rounds uint8 images back to uint8 after resizing;
    this layer keeps floats. Works with unknown sizes in graph mode.

    Args:
        size: the shorter side's length, an integer >= 1.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = check_int(size, "size", 1)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        shape = ops.shape(x)
        height, width = shorter_side_size(shape[1], shape[2], self.size)
        rows = antialias_interpolation_matrix(height, shape[1], x.dtype)
        cols = antialias_interpolation_matrix(width, shape[2], x.dtype)
        x = ops.einsum("hi,bijc->bhjc", rows, x)
        return ops.einsum("wj,bhjc->bhwc", cols, x)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1:3]
        if height is None or width is None:
            return (input_shape[0], None, None, input_shape[3])
        return (input_shape[0], *shorter_side_size(height, width, self.size), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}
