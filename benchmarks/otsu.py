"""Global threshold speed: kerasseg's layers vs scikit-image (and OpenCV for Otsu).

Usage: python benchmarks/otsu.py [--data ../shared/data] [--repeats 7]
Images: the 55 ISBI 2012 membrane slices (512x512 uint8), as one batch. Reports the median
of `repeats` runs after one warm-up, in ms per image, and the ratio to OpenCV (Otsu) and to
scikit-image (every method). The rows of a comparison are timed round-robin
(`timing.interleaved`), so that load from other jobs on a shared machine falls on each alike.
Both sides produce the mask: scikit-image's rows time the threshold and the comparison
`image > threshold` (multi-Otsu: `np.digitize`), the layers return the mask. Before timing,
every method's thresholds and masks are checked against scikit-image's on every slice.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from isbi import membrane_slices
from skimage import filters
from timing import interleaved

from kerasseg.classical import threshold as th

METHODS = {
    "Otsu": (th.OtsuThreshold, filters.threshold_otsu),
    "multi-Otsu, 3 classes": (th.MultiOtsuThreshold, filters.threshold_multiotsu),
    "Li": (th.LiThreshold, filters.threshold_li),
    "Yen": (th.YenThreshold, filters.threshold_yen),
    "ISODATA": (th.IsodataThreshold, filters.threshold_isodata),
    "triangle": (th.TriangleThreshold, filters.threshold_triangle),
    "mean": (th.MeanThreshold, filters.threshold_mean),
    "minimum": (th.MinimumThreshold, filters.threshold_minimum),
}


def reference_mask(fn, image):
    """scikit-image's (threshold, mask) of one image; (NaN, empty mask) where it raises."""
    try:
        threshold = fn(image)
    except RuntimeError:  # minimum: no two modes in some slices
        return np.nan, np.zeros(image.shape, np.uint8)
    if np.ndim(threshold):  # multi-Otsu: thresholds -> label map
        return threshold, np.digitize(image, bins=threshold)
    return threshold, image > threshold


def check(layer_class, fn, images, tensor):
    """Raise if the layer's thresholds or masks differ from scikit-image's on any slice."""
    mask, threshold = tf.function(layer_class(return_threshold=True))(tensor)
    mask, threshold = np.asarray(mask)[..., 0], np.asarray(threshold)
    for i, image in enumerate(images):
        expected, expected_mask = reference_mask(fn, image)
        if not np.allclose(threshold[i], expected, rtol=1e-12, atol=0, equal_nan=True):
            raise AssertionError(f"{layer_class.__name__}: slice {i}: {threshold[i]} != {expected}")
        if not np.array_equal(mask[i], expected_mask):
            raise AssertionError(f"{layer_class.__name__}: slice {i}: masks differ")


def otsu_table(images, tensor, repeats):
    """OpenCV, scikit-image and the Otsu layer eager, in tf.function and under XLA."""
    layer = th.OtsuThreshold()
    graph = tf.function(lambda x: layer(x))
    xla = tf.function(lambda x: layer(x), jit_compile=True)

    def opencv():
        for image in images:
            cv2.threshold(image, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)

    def scikit_image():
        for image in images:
            _ = image > filters.threshold_otsu(image)

    runs = {
        "OpenCV cv2.threshold(THRESH_OTSU), loop": opencv,
        "scikit-image threshold_otsu + compare, loop": scikit_image,
        "kerasseg OtsuThreshold, eager": lambda: layer(tensor).numpy(),
        "kerasseg OtsuThreshold, tf.function": lambda: graph(tensor).numpy(),
        "kerasseg OtsuThreshold, tf.function(jit_compile=True)": lambda: xla(tensor).numpy(),
    }
    n = len(images)
    results = {name: ms / n for name, (ms, _, _) in interleaved(runs, repeats, 1).items()}
    opencv_ms = results["OpenCV cv2.threshold(THRESH_OTSU), loop"]
    skimage_ms = results["scikit-image threshold_otsu + compare, loop"]
    print("| implementation | ms / image | vs OpenCV | vs scikit-image |\n|---|---|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.3f} | {ms / opencv_ms:.2f}x | {ms / skimage_ms:.2f}x |")


def methods_table(images, tensor, repeats):
    """Every method: scikit-image threshold + mask in a loop vs the layer under XLA."""
    n = len(images)
    print("\n| method | scikit-image threshold + mask, loop, ms / image ", end="")
    print("| kerasseg XLA, ms / image | ratio |\n|---|---|---|---|")
    for method, (layer_class, reference_fn) in METHODS.items():
        fast = tf.function(layer_class(), jit_compile=True)

        def loop(fn=reference_fn):
            for image in images:
                reference_mask(fn, image)

        runs = {"ours": lambda f=fast: f(tensor).numpy(), "theirs": loop}
        timed = interleaved(runs, repeats, 1)
        ours, theirs = timed["ours"][0] / n, timed["theirs"][0] / n
        print(f"| {method} | {theirs:.3f} | {ours:.3f} | {ours / theirs:.2f}x |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    images = membrane_slices(args.data)
    tensor = tf.constant(images[..., None])
    for layer_class, fn in METHODS.values():
        check(layer_class, fn, images, tensor)
    print(
        f"{len(images)} images {images.shape[1]}x{images.shape[2]} uint8, median of "
        f"{args.repeats}; thresholds and masks identical to scikit-image's on every slice"
    )
    otsu_table(images, tensor, args.repeats)
    methods_table(images, tensor, args.repeats)


if __name__ == "__main__":
    main()
