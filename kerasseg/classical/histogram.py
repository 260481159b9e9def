"""Per-image histograms with scikit-image's binning, for the global threshold layers.

scikit-image (`skimage.exposure.histogram(..., source_range="image")`) bins integer images
with one bin per integer from the image's minimum to its maximum, and float images with
`nbins` equal bins over [min, max] (numpy's edge rule). Here every image of a batch gets a
histogram of the same static length: integer histograms are shifted so that bin 0 holds the
image's minimum and padded with empty bins after its maximum (`length` says how many bins
are real), which keeps every index-based rule of scikit-image exact.
"""

import collections

from keras import ops

__all__ = [
    "INTEGER_RANGES",
    "Histogram",
    "bin_positions",
    "float_histogram",
    "image_histogram",
    "integer_histogram",
    "segment_histogram",
]

# dtype -> (smallest value, number of values): one bin per value.
INTEGER_RANGES = {
    "uint8": (0, 256),
    "int8": (-128, 256),
    "uint16": (0, 65536),
    "int16": (-32768, 65536),
}

Histogram = collections.namedtuple("Histogram", "counts centres length")
Histogram.__doc__ = """counts (batch, n) float32, centres (batch, n), length (batch,) int32."""


def segment_histogram(bin_index, nbins):
    """Per-row counts of bin indices.

    `unsorted_segment_sum` with a static bin count compiles under XLA (bincount does not).

    Args:
        bin_index: (batch, pixels) int32 bin indices in [0, nbins).
        nbins: the number of bins (a Python int).

    Returns:
        (batch, nbins) int32 counts.
    """
    batch = ops.shape(bin_index)[0]
    offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * nbins, 1)
    ids = ops.reshape(bin_index + offsets, (-1,))
    counts = ops.segment_sum(ops.ones_like(ids), ids, num_segments=batch * nbins)
    return ops.reshape(counts, (batch, nbins))


def integer_histogram(values, dtype):
    """One bin per integer from each image's min to max, shifted to start at bin 0.

    Args:
        values: (batch, pixels) integer values.
        dtype: their dtype name, a key of `INTEGER_RANGES`.

    Returns:
        A `Histogram` with one bin per value of the dtype (empty bins after each image's
        maximum).
    """
    start, nbins = INTEGER_RANGES[dtype]
    shifted = ops.cast(values, "int32") - start
    full = segment_histogram(shifted, nbins)
    low = ops.min(shifted, axis=1)
    length = ops.max(shifted, axis=1) - low + 1
    positions = ops.arange(nbins, dtype="int32")
    index = ops.minimum(ops.expand_dims(low, 1) + positions, nbins - 1)
    real = positions < ops.expand_dims(length, 1)
    counts = ops.where(real, ops.take_along_axis(full, index, axis=1), 0)
    centres = ops.cast(ops.expand_dims(low + start, 1) + positions, "float64")
    return Histogram(ops.cast(counts, "float32"), centres, length)


def float_histogram(values, nbins):
    """numpy.histogram's `nbins` bins over each image's [min, max], and their centres.

    Arithmetic follows numpy for the image's dtype: edges from a float64 linspace cast to
    the dtype, indices corrected against the edges.

    Args:
        values: (batch, pixels) float values.
        nbins: the number of bins.

    Returns:
        A `Histogram` whose centres are in the image's dtype.
    """
    dtype = values.dtype
    low = ops.min(values, axis=1, keepdims=True)
    high = ops.max(values, axis=1, keepdims=True)
    flat = ops.equal(low, high)  # numpy widens a zero range by 0.5 on each side
    low = ops.where(flat, low - 0.5, low)
    high = ops.where(flat, high + 0.5, high)
    low64, high64 = ops.cast(low, "float64"), ops.cast(high, "float64")
    steps = ops.arange(nbins + 1, dtype="float64") / nbins
    edges = ops.cast(low64 + steps * (high64 - low64), dtype)
    edges = ops.concatenate([edges[:, :-1], high], axis=1)
    scaled = (values - low) / ops.cast(high64 - low64, dtype) * nbins
    index = ops.clip(ops.cast(ops.floor(scaled), "int32"), 0, nbins - 1)
    index = ops.where(values < ops.take_along_axis(edges, index, axis=1), index - 1, index)
    above = values >= ops.take_along_axis(edges, index + 1, axis=1)
    index = ops.where(above & (index != nbins - 1), index + 1, index)
    counts = ops.cast(segment_histogram(index, nbins), "float32")
    centres = (edges[:, :-1] + edges[:, 1:]) / 2
    length = ops.full((ops.shape(values)[0],), nbins, dtype="int32")
    return Histogram(counts, centres, length)


def image_histogram(values, dtype, nbins=256):
    """The scikit-image histogram of each row of `values`.

    Args:
        values: (batch, pixels) values.
        dtype: their dtype name.
        nbins: the number of bins of float values (integers get one bin per value).

    Returns:
        A `Histogram`.
    """
    if dtype in INTEGER_RANGES:
        return integer_histogram(values, dtype)
    return float_histogram(values, nbins)


def bin_positions(histogram):
    """Bin positions and which bins are real.

    Args:
        histogram: a `Histogram` of n bins.

    Returns:
        A tuple ((1, n) int32 bin positions, (batch, n) bool mask of the real bins).
    """
    n = ops.shape(histogram.counts)[1]
    positions = ops.expand_dims(ops.arange(n, dtype="int32"), 0)
    return positions, positions < ops.expand_dims(histogram.length, 1)
