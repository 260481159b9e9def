"""Global Otsu thresholding as a batched Keras layer, with scikit-image's semantics.

Reference:
    N. Otsu, "A Threshold Selection Method from Gray-Level Histograms", IEEE Trans. SMC 9(1),
    1979. Semantics of `skimage.filters.threshold_otsu` (scikit-image 0.26): the threshold is
    a histogram bin centre, the first maximum of the between-class variance wins, the
    foreground is `image > threshold`, and a constant image has its value as threshold
    (empty foreground). Integer images get one bin per value (exact on uint8 and uint16);
    float images get `nbins` bins over each image's [min, max] with numpy's bin-edge rule.
"""

import keras
import numpy as np
from keras import ops

INTEGER_BINS = {"uint8": 256, "uint16": 65536}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _histogram(bin_index, nbins):
    """Per-image counts of (batch, pixels) int32 bin indices -> (batch, nbins) int32."""
    batch = ops.shape(bin_index)[0]
    ids = ops.reshape(
        bin_index + ops.expand_dims(ops.arange(batch, dtype="int32") * nbins, 1), (-1,)
    )
    counts = ops.segment_sum(ops.ones_like(ids), ids, num_segments=batch * nbins)
    return ops.reshape(counts, (batch, nbins))


def _float_bins(values, nbins):
    """numpy.histogram's bin index and bin centres over each image's [min, max]."""
    dtype = keras.backend.standardize_dtype(values.dtype)
    low = ops.min(values, axis=1, keepdims=True)
    high = ops.max(values, axis=1, keepdims=True)
    # numpy widens a zero range by 0.5 on each side.
    flat = ops.equal(low, high)
    low = ops.where(flat, low - 0.5, low)
    high = ops.where(flat, high + 0.5, high)
    steps = ops.arange(nbins + 1, dtype="float64") / nbins
    low64, high64 = ops.cast(low, "float64"), ops.cast(high, "float64")
    edges = ops.cast(low64 + steps * (high64 - low64), dtype)
    edges = ops.concatenate([edges[:, :-1], high], axis=1)
    scaled = (values - low) / ops.cast(high64 - low64, dtype) * nbins
    index = ops.clip(ops.cast(ops.floor(scaled), "int32"), 0, nbins - 1)
    # numpy corrects the computed index against the actual edges.
    lower_edge = ops.take_along_axis(edges, index, axis=1)
    index = ops.where(values < lower_edge, index - 1, index)
    upper_edge = ops.take_along_axis(edges, index + 1, axis=1)
    index = ops.where((values >= upper_edge) & (index != nbins - 1), index + 1, index)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2
    return index, centres


def otsu_from_histogram(counts, centres):
    """Otsu threshold of (batch, nbins) histograms: the first maximum of the criterion."""
    counts = ops.cast(counts, "float64")
    centres = ops.cast(centres, "float64")
    weight1 = ops.cumsum(counts, axis=1)
    weight2 = ops.flip(ops.cumsum(ops.flip(counts, 1), axis=1), 1)
    moment = counts * centres
    mean1 = ops.divide_no_nan(ops.cumsum(moment, axis=1), weight1)
    mean2 = ops.divide_no_nan(ops.flip(ops.cumsum(ops.flip(moment, 1), axis=1), 1), weight2)
    variance = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    index = ops.expand_dims(ops.argmax(variance, axis=1), 1)
    return ops.take_along_axis(centres, ops.cast(index, "int32"), axis=1)[:, 0]


@keras.saving.register_keras_serializable(package="kerasseg")
class OtsuThreshold(keras.layers.Layer):
    """Otsu's global threshold per image of a (batch, H, W, 1) batch.

    Args:
        nbins: histogram bins for float images (integer images use one bin per value).
        return_threshold: also return the (batch,) thresholds.

    Returns:
        A (batch, H, W, 1) int32 mask, 1 where `image > threshold`; with
        `return_threshold=True`, `(mask, threshold)`. NaN pixels make the image's threshold
        NaN and its mask empty (scikit-image raises instead; eager calls raise here too).

    Example:
        >>> mask = OtsuThreshold()(images)  # images: uint8 (batch, H, W, 1)
    """

    def __init__(self, nbins=256, return_threshold=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(nbins, bool) or not isinstance(nbins, int) or nbins < 2:
            raise ValueError(f"`nbins` must be an integer >= 2; got {nbins!r}.")
        self.nbins = nbins
        self.return_threshold = bool(return_threshold)

    def _check(self, images):
        shape = tuple(images.shape)
        dtype = keras.backend.standardize_dtype(images.dtype)
        if len(shape) != 4 or shape[-1] != 1:
            raise ValueError(
                f"`images` must have shape (batch, height, width, 1), one grey channel; got "
                f"{shape}. Convert colour images to grey first."
            )
        if 0 in shape[1:3]:
            raise ValueError(f"`images` must not be empty; got shape {shape}.")
        if dtype not in INTEGER_BINS and dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"`images` dtype must be one of {tuple(INTEGER_BINS) + FLOAT_DTYPES}; got {dtype}."
            )
        if not isinstance(images, keras.KerasTensor) and dtype in FLOAT_DTYPES:
            try:
                finite = bool(ops.all(ops.isfinite(images)))
            except Exception:  # symbolic (traced) tensor: checked per image in the graph
                return dtype
            if not finite:
                raise ValueError("`images` contain NaN or infinite values; Otsu needs finite ones.")
        return dtype

    def call(self, images, training=None):
        dtype = self._check(images)
        batch = ops.shape(images)[0]
        values = ops.reshape(images, (batch, -1))
        if dtype in INTEGER_BINS:
            threshold = self._integer_threshold(values, INTEGER_BINS[dtype])
            # Integer thresholds compare exactly in the image's own dtype (no full-size cast).
            mask = ops.greater(images, ops.reshape(ops.cast(threshold, dtype), (-1, 1, 1, 1)))
            threshold = ops.cast(threshold, "float32")
        else:
            threshold = self._float_threshold(values)
            mask = ops.greater(images, ops.reshape(ops.cast(threshold, dtype), (-1, 1, 1, 1)))
            threshold = ops.cast(threshold, "float64" if dtype == "float64" else "float32")
        mask = ops.cast(mask, "int32")
        return (mask, threshold) if self.return_threshold else mask

    @staticmethod
    def _integer_threshold(values, nbins):
        counts = _histogram(ops.cast(values, "int32"), nbins)
        centres = ops.broadcast_to(ops.arange(nbins, dtype="float64"), ops.shape(counts))
        threshold = otsu_from_histogram(counts, centres)
        occupied = counts > 0
        constant = ops.equal(ops.sum(ops.cast(occupied, "int32"), axis=1), 1)
        only_value = ops.cast(ops.argmax(ops.cast(occupied, "int32"), axis=1), "float64")
        return ops.where(constant, only_value, threshold)

    def _float_threshold(self, values):
        index, centres = _float_bins(values, self.nbins)
        threshold = otsu_from_histogram(_histogram(index, self.nbins), centres)
        low = ops.cast(ops.min(values, axis=1), "float64")
        constant = ops.equal(low, ops.cast(ops.max(values, axis=1), "float64"))
        threshold = ops.where(constant, low, threshold)
        return ops.where(ops.any(ops.isnan(values), axis=1), np.nan, threshold)

    def compute_output_spec(self, images, training=None):
        mask = keras.KerasTensor(images.shape, dtype="int32")
        if not self.return_threshold:
            return mask
        dtype = (
            "float64" if keras.backend.standardize_dtype(images.dtype) == "float64" else "float32"
        )
        return mask, keras.KerasTensor((images.shape[0],), dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update(nbins=self.nbins, return_threshold=self.return_threshold)
        return config


def otsu(input_dtype="uint8", nbins=256, return_threshold=True):
    """Otsu thresholding as a model: (batch, H, W, 1) grey images -> mask and threshold.

    Args:
        input_dtype: dtype of the images the model takes, "uint8" (default), "uint16" or a
            float dtype. Integer images are thresholded exactly like scikit-image does.
        nbins: histogram bins for float images.
        return_threshold: outputs {"mask", "threshold"} if True, else the mask alone.
    """
    if input_dtype not in tuple(INTEGER_BINS) + FLOAT_DTYPES:
        raise ValueError(
            f"`input_dtype` must be one of {tuple(INTEGER_BINS) + FLOAT_DTYPES}; got "
            f"{input_dtype!r}."
        )
    from kerasseg.models.base import SegmentationModel

    images = keras.Input((None, None, 1), dtype=input_dtype, name="images")
    result = OtsuThreshold(nbins=nbins, return_threshold=return_threshold, name="otsu")(images)
    if return_threshold:
        outputs = {"mask": result[0], "threshold": result[1]}
    else:
        outputs = result
    return SegmentationModel(images, outputs, name="otsu")
