"""Which per-image histogram primitive is fastest on CPU: keras.ops candidates side by side.

Usage: python benchmarks/histogram_primitives.py [--data ../shared/data] [--repeats 15]
       KERAS_BACKEND=jax python benchmarks/histogram_primitives.py

Images: the 55 ISBI 2012 membrane slices (512x512 uint8) as one batch; each primitive
computes the (55, 256) int32 histograms (one bin per uint8 value) and is checked against
`numpy.bincount` before timing. TensorFlow rows: `tf.function` and `tf.function(jit_compile=
True)` (XLA); JAX rows: `jax.jit`. Medians in ms per image; the fast primitives are timed
round-robin (`timing.interleaved`) so that load from other jobs falls on each alike; the
slow ones (over 1 ms per image) with `--slow-repeats` runs, compiled only (XLA / jit). The
candidates:

    segment_sum      ops.segment_sum of ones over per-image bin ids (image * 256 + value);
                     what `kerasseg.classical.histogram` uses.
    segment_sum, groups  `kerasseg.classical.histogram.segment_histogram`: the same, traced
                     as one scatter per group of images of at most 2**20 pixels (the ids
                     and ones XLA materialises then stay in cache).
    scatter          ops.scatter of ones at (image * 256 + value), duplicates summed.
    pairs            segment_sum over 65536 ids made of two neighbouring pixels, then the
                     two marginals (half the scatter updates, a 256x larger table).
    bincount         ops.bincount of the per-image ids (its length depends on the values:
                     no XLA under TensorFlow, no jit under JAX).
    one-hot tiles    compare tiles of 8 pixels with the 256 bin values, sum the matches.
    nibble matmul    one-hot of the high and low 4 bits, (16 x pixels) @ (pixels x 16).
    sort + search    sort the ids, ops.searchsorted of the bin edges (TensorFlow's XLA lowers
                     searchsorted to a comparison of every id with every edge: no memory).
"""

import argparse
import os
import sys
from pathlib import Path

import keras
import numpy as np
from isbi import membrane_slices
from keras import ops
from timing import interleaved, median_ms

from kerasseg.classical.histogram import segment_histogram

BINS = 256


def _ids(images):
    """(batch, pixels) int32 ids image * 256 + value."""
    batch = ops.shape(images)[0]
    offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * BINS, 1)
    return ops.reshape(ops.cast(images, "int32"), (batch, -1)) + offsets


def segment_sum(images):
    batch = ops.shape(images)[0]
    ids = ops.reshape(_ids(images), (-1,))
    counts = ops.segment_sum(ops.ones_like(ids), ids, num_segments=batch * BINS)
    return ops.reshape(counts, (batch, BINS))


def kerasseg_groups(images):
    batch = ops.shape(images)[0]
    return segment_histogram(ops.reshape(images, (batch, -1)), BINS)


def scatter(images):
    batch = ops.shape(images)[0]
    ids = ops.reshape(_ids(images), (-1, 1))
    counts = ops.scatter(ids, ops.ones((ops.shape(ids)[0],), "int32"), (batch * BINS,))
    return ops.reshape(counts, (batch, BINS))


def pairs(images):
    batch = ops.shape(images)[0]
    values = ops.reshape(ops.cast(images, "int32"), (batch, -1, 2))
    codes = values[:, :, 0] * BINS + values[:, :, 1]
    offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * BINS * BINS, 1)
    ids = ops.reshape(codes + offsets, (-1,))
    joint = ops.segment_sum(ops.ones_like(ids), ids, num_segments=batch * BINS * BINS)
    joint = ops.reshape(joint, (batch, BINS, BINS))
    return ops.sum(joint, axis=1) + ops.sum(joint, axis=2)


def bincount(images):
    batch = ops.shape(images)[0]
    counts = ops.bincount(ops.reshape(_ids(images), (-1,)), minlength=batch * BINS)
    return ops.reshape(counts, (batch, BINS))


def one_hot_tiles(images, tile=8):
    batch = ops.shape(images)[0]
    values = ops.reshape(images, (batch, -1, tile, 1))
    levels = ops.cast(ops.arange(BINS), images.dtype)
    return ops.sum(ops.cast(ops.equal(values, levels), "int32"), axis=(1, 2))


def nibble_matmul(images):
    batch = ops.shape(images)[0]
    values = ops.reshape(ops.cast(images, "int32"), (batch, -1, 1))
    sixteen = ops.arange(16, dtype="int32")
    high = ops.cast(ops.equal(values // 16, sixteen), "float32")
    low = ops.cast(ops.equal(values % 16, sixteen), "float32")
    joint = ops.einsum("bph,bpl->bhl", high, low)  # exact: counts < 2**24
    return ops.reshape(ops.cast(joint, "int32"), (batch, BINS))


def sort_search(images):
    batch = ops.shape(images)[0]
    ordered = ops.sort(ops.reshape(_ids(images), (-1,)))
    edges = ops.arange(batch * BINS + 1, dtype="int32")
    positions = ops.searchsorted(ordered, edges, side="left")
    return ops.reshape(positions[1:] - positions[:-1], (batch, BINS))


FAST = {
    "segment_sum": segment_sum,
    "segment_sum, groups": kerasseg_groups,
    "scatter": scatter,
    "pairs": pairs,
    "bincount": bincount,
}
SLOW = {
    "one-hot tiles": one_hot_tiles,
    "nibble matmul": nibble_matmul,
    "sort + search": sort_search,
}


def compiled_modes(fn, xla_only):
    """{mode: compiled fn} for the running backend (`xla_only`: no plain tf.function, which
    would materialise the one-hot tensors)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        modes = {"XLA": tf.function(fn, jit_compile=True)}
        return modes if xla_only else {"tf.function": tf.function(fn), **modes}
    if backend == "jax":
        import jax

        return {"jax.jit": jax.jit(fn)}
    raise SystemExit(f"backend {backend!r}: run with KERAS_BACKEND=tensorflow or jax")


def runnable(primitives, tensor, expected, xla_only=False):
    """{(name, mode): callable} of the primitives that compile and agree; prints the rest."""
    runs = {}
    for name, fn in primitives.items():
        for mode, compiled in compiled_modes(fn, xla_only).items():
            try:
                counts = np.asarray(compiled(tensor))
            except Exception as error:  # noqa: BLE001 (report what fails to compile)
                first = str(error).strip().splitlines()[0][:70]
                print(f"| {name} | {mode} | does not compile: {type(error).__name__}: {first} |")
                continue
            if not np.array_equal(counts, expected):
                raise AssertionError(f"{name} ({mode}) disagrees with numpy.bincount")
            runs[(name, mode)] = lambda c=compiled: np.asarray(c(tensor))
    return runs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--slow-repeats", type=int, default=3)
    args = parser.parse_args()
    images = membrane_slices(args.data)
    expected = np.stack([np.bincount(image.ravel(), minlength=BINS) for image in images])
    tensor = ops.convert_to_tensor(images)
    n = len(images)
    print(
        f"backend {keras.backend.backend()}, {n} images {images.shape[1]}x{images.shape[2]} "
        f"uint8, {os.cpu_count()} CPUs; every primitive equals numpy.bincount"
    )
    print("| primitive | mode | ms / image | vs segment_sum |\n|---|---|---|---|")
    fast = runnable(FAST, tensor, expected)
    timed = {key: ms / n for key, (ms, _, _) in interleaved(fast, args.repeats, 1).items()}
    for key, fn in runnable(SLOW, tensor, expected, xla_only=True).items():
        timed[key] = median_ms(fn, args.slow_repeats) / n
    numpy_ms = median_ms(lambda: [np.bincount(i.ravel(), minlength=BINS) for i in images], 7)
    for (name, mode), ms in timed.items():
        reference = timed.get(("segment_sum", mode))
        ratio = f"{ms / reference:.2f}x" if reference else "-"
        print(f"| {name} | {mode} | {ms:.3f} | {ratio} |")
    print(f"| numpy.bincount, loop (for scale) | - | {numpy_ms / n:.3f} | - |")


if __name__ == "__main__":
    sys.exit(main())
