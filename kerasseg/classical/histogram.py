"""Per-image histograms with scikit-image's binning, for the global threshold layers.

scikit-image (`skimage.exposure.histogram(..., source_range="image")`) bins integer images
with one bin per integer from the image's minimum to its maximum, and float images with
`nbins` equal bins over [min, max] (numpy's edge rule). Here every image of a batch gets a
histogram of the same static length: integer histograms are shifted so that bin 0 holds the
image's minimum and padded with empty bins after its maximum (`length` says how many bins
are real), which keeps every index-based rule of scikit-image exact.

Cost: integer images are read once (one scatter-add of every pixel into one bin per value
of the dtype); their minimum and maximum are the first and last non-empty bins. Float images
are read twice: once for their minimum and maximum (the bin edges depend on them), once to
bin them. The scatter-add (`ops.segment_sum` over per-image bin ids) is the fastest
histogram primitive of those measured under XLA on CPU (`benchmarks/histogram_primitives.py`
compares it with `ops.scatter`, `ops.bincount`, one-hot sums, matrix products and sorting).
"""

import collections

from keras import ops

from kerasseg.ops.image import is_symbolic

__all__ = [
    "INTEGER_RANGES",
    "MAX_SCATTERS",
    "SCATTER_PIXELS",
    "Histogram",
    "bin_positions",
    "float_histogram",
    "image_histogram",
    "integer_histogram",
    "segment_histogram",
    "value_range",
]

# dtype -> (smallest value, number of values): one bin per value.
INTEGER_RANGES = {
    "uint8": (0, 256),
    "int8": (-128, 256),
    "uint16": (0, 65536),
    "int16": (-32768, 65536),
}

# In a traced call (tf.function, XLA, jax.jit), one scatter-add handles at most this many
# pixels: its bin ids and ones (8 bytes a pixel, materialised by XLA on CPU) then stay in the
# processor's cache, which made Otsu on 55 512x512 images 10-35% faster under XLA. Larger
# batches are split by images, into at most `MAX_SCATTERS` groups. Eager calls use one
# scatter (each extra kernel call costs more there than the cache saves).
SCATTER_PIXELS = 1 << 20
MAX_SCATTERS = 16

Histogram = collections.namedtuple("Histogram", "counts centres length low high")
Histogram.__doc__ = """Per-image histograms of a batch.

Fields:
    counts: (batch, n) int32 pixel counts (exact up to 2**31 - 1 pixels per bin).
    centres: (batch, n) bin centres (float64 for integer images, the image's dtype for
        float images).
    length: (batch,) int32 number of real bins (the others are empty padding).
    low, high: (batch,) float64 smallest and largest pixel value of each image.
"""


def segment_histogram(bin_index, nbins):
    """Per-row counts of bin indices.

    `ops.segment_sum` with a static bin count compiles under XLA (`ops.bincount` does not:
    its length depends on the values). A batch of known size over `SCATTER_PIXELS` pixels is
    counted by groups of images when traced.

    Args:
        bin_index: (batch, pixels) integer bin indices in [0, nbins).
        nbins: the number of bins (a Python int).

    Returns:
        (batch, nbins) int32 counts.
    """
    batch, pixels = bin_index.shape
    whole = batch is None or pixels is None or batch * pixels <= SCATTER_PIXELS
    if whole or not is_symbolic(bin_index):
        return _scatter_counts(bin_index, nbins)
    rows = max(SCATTER_PIXELS // pixels, -(-batch // MAX_SCATTERS), 1)
    parts = [_scatter_counts(bin_index[i : i + rows], nbins) for i in range(0, batch, rows)]
    return ops.concatenate(parts, axis=0)


def _scatter_counts(bin_index, nbins):
    """`segment_histogram` by one scatter-add over the whole batch."""
    batch = ops.shape(bin_index)[0]
    offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * nbins, 1)
    ids = ops.reshape(ops.cast(bin_index, "int32") + offsets, (-1,))
    counts = ops.segment_sum(ops.ones_like(ids), ids, num_segments=batch * nbins)
    return ops.reshape(counts, (batch, nbins))


def value_range(values):
    """Each row's smallest and largest value, as float64 (exact for every image dtype).

    Args:
        values: (batch, pixels) values.

    Returns:
        A tuple of two (batch,) float64 tensors.
    """
    low = ops.min(values, axis=1)
    high = ops.max(values, axis=1)
    return ops.cast(low, "float64"), ops.cast(high, "float64")


def integer_histogram(values, dtype):
    """One bin per integer from each image's min to max, shifted to start at bin 0.

    The pixels are read once: one count per value of the dtype, from which the minimum and
    maximum (first and last non-empty bins) and the shifted histogram follow.

    Args:
        values: (batch, pixels) integer values.
        dtype: their dtype name, a key of `INTEGER_RANGES`.

    Returns:
        A `Histogram` with one bin per value of the dtype (empty bins after each image's
        maximum).
    """
    start, nbins = INTEGER_RANGES[dtype]
    index = ops.cast(values, "int32")
    full = segment_histogram(index - start if start else index, nbins)
    positions = ops.arange(nbins, dtype="int32")
    occupied = full > 0  # every image has a pixel (empty images are refused before)
    low = ops.min(ops.where(occupied, positions, nbins), axis=1)
    high = ops.max(ops.where(occupied, positions, -1), axis=1)
    length = high - low + 1
    shifted = ops.minimum(ops.expand_dims(low, 1) + positions, nbins - 1)
    real = positions < ops.expand_dims(length, 1)
    counts = ops.where(real, ops.take_along_axis(full, shifted, axis=1), 0)
    centres = ops.cast(ops.expand_dims(low + start, 1) + positions, "float64")
    low_value = ops.cast(low + start, "float64")
    high_value = ops.cast(high + start, "float64")
    return Histogram(counts, centres, length, low_value, high_value)


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
    low_value, high_value = ops.cast(low[:, 0], "float64"), ops.cast(high[:, 0], "float64")
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
    counts = segment_histogram(index, nbins)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2
    length = ops.full((ops.shape(values)[0],), nbins, dtype="int32")
    return Histogram(counts, centres, length, low_value, high_value)


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
