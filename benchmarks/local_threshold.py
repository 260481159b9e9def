"""Local threshold speed: kerasseg's layers vs OpenCV and scikit-image on the same images.

Usage: python benchmarks/local_threshold.py [--data ../shared/data] [--repeats 9]
           [--warmups 1] [--methods mean gaussian niblack sauvola]

Images: the 25 ISBI 2012 training slices (512x512 uint8) as one batch. Adaptive mean and
Gaussian thresholds (block 15, C 2) against `cv2.adaptiveThreshold` in a loop; Niblack and
Sauvola (window 15, k 0.2) against scikit-image's `threshold_niblack` / `threshold_sauvola`
plus the comparison, in a loop. Before timing, every kerasseg mask is checked against the
reference's (they must be identical). The layers run in `tf.function` with and without XLA
(`jit_compile=True`); results are read back with `.numpy()`.

Timing (`timing.interleaved`): `warmups` calls of every path (the first traces and compiles),
then `repeats` rounds calling each path once, round-robin, so that other jobs on a shared
machine slow every path alike. Median ms per image, and its ratio to the reference's.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import skimage.io
import tensorflow as tf
from skimage.filters import threshold_niblack, threshold_sauvola
from timing import interleaved

from kerasseg.classical.local_threshold import (
    AdaptiveThreshold,
    NiblackThreshold,
    SauvolaThreshold,
)

OPENCV = "OpenCV adaptiveThreshold loop"
METHODS = {
    "mean": (
        "adaptive mean, block 15, C 2",
        AdaptiveThreshold(15, 2, "mean"),
        OPENCV,
        lambda im: cv2.adaptiveThreshold(
            im, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 15, 2
        ),
    ),
    "gaussian": (
        "adaptive Gaussian, block 15, C 2",
        AdaptiveThreshold(15, 2, "gaussian"),
        OPENCV,
        lambda im: cv2.adaptiveThreshold(
            im, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 15, 2
        ),
    ),
    "niblack": (
        "Niblack, window 15, k 0.2",
        NiblackThreshold(15, 0.2),
        "scikit-image threshold_niblack loop",
        lambda im: im > threshold_niblack(im, 15, 0.2),
    ),
    "sauvola": (
        "Sauvola, window 15, k 0.2",
        SauvolaThreshold(15, 0.2),
        "scikit-image threshold_sauvola loop",
        lambda im: im > threshold_sauvola(im, 15, 0.2),
    ),
}


def time_method(key, images, repeats, warmups):
    """Rows (method, implementation, ms / image, ratio to the reference) of one method."""
    method, layer, reference_name, reference = METHODS[key]
    batch = tf.constant(images[..., None])
    expected = np.stack([reference(im) for im in images]) > 0
    runs = {reference_name: lambda: [reference(im) for im in images]}
    for name, jit in (("tf.function", False), ("tf.function(jit_compile=True)", True)):
        function = tf.function(lambda x: layer(x), jit_compile=jit)
        mask = function(batch).numpy()[..., 0] > 0
        if not np.array_equal(mask, expected):
            raise RuntimeError(f"{method}: kerasseg {name} mask differs from {reference_name}")
        runs[f"kerasseg, {name}"] = lambda function=function: function(batch).numpy()
    results = interleaved(runs, repeats, warmups)
    base = results[reference_name][0]
    n = len(images)
    return [(method, name, ms / n, ms / base) for name, (ms, _, _) in results.items()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    folder = Path(args.data) / "isbi2012-membrane" / "train" / "image"
    images = np.stack([skimage.io.imread(p) for p in sorted(folder.glob("*.png"))])
    print(
        f"TensorFlow {tf.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} "
        f"threads), scikit-image {skimage.__version__}"
    )
    print(
        f"{len(images)} images {images.shape[1]}x{images.shape[2]} uint8, median of "
        f"{args.repeats} interleaved rounds; masks identical to the reference's"
    )
    print("| method | implementation | ms / image | vs reference |\n|---|---|---|---|")
    for key in args.methods:
        for method, name, ms, ratio in time_method(key, images, args.repeats, args.warmups):
            print(f"| {method} | {name} | {ms:.2f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
