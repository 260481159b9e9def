"""Global threshold speed: kerasseg's layers vs scikit-image (and OpenCV for Otsu).

Usage: python benchmarks/otsu.py [--data ../shared/data] [--repeats 7]
Images: the 55 ISBI 2012 membrane slices (512x512 uint8), as one batch. Reports the median
of `repeats` runs after one warm-up, in ms per image, and the ratio to OpenCV (Otsu) and to
scikit-image (every method).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import skimage.io
import tensorflow as tf
from skimage import filters
from skimage.filters import threshold_otsu
from timing import median_ms

from kerasseg.classical import threshold as th
from kerasseg.layers import OtsuThreshold

OTHERS = {
    "multi-Otsu, 3 classes": (th.MultiOtsuThreshold, filters.threshold_multiotsu),
    "Li": (th.LiThreshold, filters.threshold_li),
    "Yen": (th.YenThreshold, filters.threshold_yen),
    "ISODATA": (th.IsodataThreshold, filters.threshold_isodata),
    "triangle": (th.TriangleThreshold, filters.threshold_triangle),
    "mean": (th.MeanThreshold, filters.threshold_mean),
    "minimum": (th.MinimumThreshold, filters.threshold_minimum),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    folder = Path(args.data) / "isbi2012-membrane"
    paths = sorted(folder.glob("train/image/*.png")) + sorted(folder.glob("test/*.png"))
    images = np.stack([skimage.io.imread(p) for p in paths])
    batch = images[..., None]
    layer = OtsuThreshold()
    graph = tf.function(lambda x: layer(x))
    xla = tf.function(lambda x: layer(x), jit_compile=True)
    tensor = tf.constant(batch)

    def opencv():
        for image in images:
            cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)

    def scikit_image():
        for image in images:
            _ = image > threshold_otsu(image)

    runs = {
        "OpenCV cv2.threshold(THRESH_OTSU), loop": opencv,
        "scikit-image threshold_otsu + compare, loop": scikit_image,
        "kerasseg OtsuThreshold, eager": lambda: layer(tensor).numpy(),
        "kerasseg OtsuThreshold, tf.function": lambda: graph(tensor).numpy(),
        "kerasseg OtsuThreshold, tf.function(jit_compile=True)": lambda: xla(tensor).numpy(),
    }
    n = len(images)
    results = {name: median_ms(fn, args.repeats) / n for name, fn in runs.items()}
    reference = results["OpenCV cv2.threshold(THRESH_OTSU), loop"]
    print(f"{n} images {images.shape[1]}x{images.shape[2]} uint8, median of {args.repeats}")
    print("| implementation | ms / image | vs OpenCV |\n|---|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.3f} | {ms / reference:.1f}x |")
    print("\n| method | scikit-image loop, ms / image | kerasseg XLA, ms / image | ratio |")
    print("|---|---|---|---|")
    for method, (layer_class, reference_fn) in OTHERS.items():
        fast = tf.function(layer_class(), jit_compile=True)

        def loop(fn=reference_fn):
            for image in images:
                try:
                    fn(image)
                except RuntimeError:  # minimum: no two modes in some slices
                    pass

        ours = median_ms(lambda f=fast: f(tensor).numpy(), args.repeats) / n
        theirs = median_ms(loop, args.repeats) / n
        print(f"| {method} | {theirs:.3f} | {ours:.3f} | {ours / theirs:.2f}x |")


if __name__ == "__main__":
    main()
