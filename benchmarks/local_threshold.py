"""Local threshold speed: kerasseg's layers vs OpenCV and scikit-image on the same images.

Usage: python benchmarks/local_threshold.py [--data ../shared/data] [--repeats 7]

Images: the 25 ISBI 2012 training slices (512x512 uint8) as one batch. Adaptive mean and
Gaussian thresholds (block 15, C 2) against `cv2.adaptiveThreshold` in a loop (the layers
are pixel-identical); Niblack and Sauvola (window 15) against scikit-image's
`threshold_niblack` / `threshold_sauvola` plus the comparison. Medians of `repeats` runs
after one warm-up (and XLA compilation), in ms per image.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import skimage.io
import tensorflow as tf
from skimage.filters import threshold_niblack, threshold_sauvola
from timing import median_ms

from kerasseg.classical.local_threshold import (
    AdaptiveThreshold,
    NiblackThreshold,
    SauvolaThreshold,
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    folder = Path(args.data) / "isbi2012-membrane" / "train" / "image"
    images = np.stack([skimage.io.imread(p) for p in sorted(folder.glob("*.png"))])
    batch = tf.constant(images[..., None])
    n = len(images)
    print(
        f"TensorFlow {tf.__version__}, OpenCV {cv2.__version__}, scikit-image {skimage.__version__}"
    )
    print(f"{n} images {images.shape[1]}x{images.shape[2]} uint8, median of {args.repeats}")
    print("| method | implementation | ms / image | vs reference |\n|---|---|---|---|")

    methods = {
        "adaptive mean, block 15, C 2": (
            AdaptiveThreshold(15, 2, "mean"),
            "OpenCV adaptiveThreshold loop",
            lambda im: cv2.adaptiveThreshold(
                im, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 15, 2
            ),
        ),
        "adaptive Gaussian, block 15, C 2": (
            AdaptiveThreshold(15, 2, "gaussian"),
            "OpenCV adaptiveThreshold loop",
            lambda im: cv2.adaptiveThreshold(
                im, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 15, 2
            ),
        ),
        "Niblack, window 15, k 0.2": (
            NiblackThreshold(15, 0.2),
            "scikit-image threshold_niblack loop",
            lambda im: im > threshold_niblack(im, 15, 0.2),
        ),
        "Sauvola, window 15, k 0.2": (
            SauvolaThreshold(15, 0.2),
            "scikit-image threshold_sauvola loop",
            lambda im: im > threshold_sauvola(im, 15, 0.2),
        ),
    }
    for method, (layer, reference_name, reference) in methods.items():
        graph = tf.function(lambda x, layer=layer: layer(x))
        xla = tf.function(lambda x, layer=layer: layer(x), jit_compile=True)
        runs = {
            reference_name: lambda reference=reference: [reference(im) for im in images],
            "kerasseg, tf.function": lambda graph=graph: graph(batch).numpy(),
            "kerasseg, tf.function(jit_compile=True)": lambda xla=xla: xla(batch).numpy(),
        }
        results = {name: median_ms(fn, args.repeats) / n for name, fn in runs.items()}
        base = results[reference_name]
        for name, ms in results.items():
            print(f"| {method} | {name} | {ms:.2f} | {ms / base:.1f}x |")


if __name__ == "__main__":
    main()
