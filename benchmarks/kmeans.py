"""k-means (k = 4) colour clustering speed: kerasseg's layer vs OpenCV and scikit-learn.

Usage: python benchmarks/kmeans.py [--data ../shared/data] [--images 8] [--repeats 3]
Images: the first `images` CamVid train frames (360x480 RGB, 172 800 pixels each), each
clustered to convergence, one image per call (the batched layer row: all images in one
call). Reports the median of `repeats` runs after one warm-up, in ms per image, the ratio
to OpenCV, and the mean inertia (sum of squared RGB distances to the centre, 0..255 units).

Settings: OpenCV `cv2.kmeans(K=4, KMEANS_PP_CENTERS, attempts=1, (EPS|MAX_ITER, 100, 0.1))`
on float32 0..255 pixels (its stopping rule: max squared centre shift <= 0.01);
scikit-learn `KMeans(4, n_init=1, random_state=0)` (lloyd, tol=1e-4) and kerasseg
`KMeansSegmentation(k=4, n_init=1)` (the same stopping rule) on pixels / 255.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import skimage.io
import tensorflow as tf
from sklearn.cluster import KMeans
from timing import median_ms

from kerasseg.classical.kmeans import KMeansSegmentation


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = sorted((Path(args.data) / "camvid" / "train").glob("*.png"))[: args.images]
    images = np.stack([skimage.io.imread(p) for p in paths])
    n = len(images)
    pixels = [i.reshape(-1, 3).astype(np.float32) for i in images]
    scaled = [p / np.float32(255) for p in pixels]
    tensors = [tf.constant(i[None]) for i in images]
    batch = tf.constant(images)
    inertia = {}

    def opencv():
        cv2.setRNGSeed(0)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 100, 0.1)
        inertia["opencv"] = [
            cv2.kmeans(p, 4, None, criteria, 1, cv2.KMEANS_PP_CENTERS)[0] for p in pixels
        ]

    def sklearn(n_init):
        def run():
            inertia[f"sklearn{n_init}"] = [
                KMeans(4, n_init=n_init, random_state=0).fit(p).inertia_ * 255**2 for p in scaled
            ]

        return run

    def layer_loop(fn, key):
        def run():
            inertia[key] = [float(fn(t)[2][0]) * 255**2 for t in tensors]

        return run

    def layer_batch(fn, key):
        def run():
            inertia[key] = list(np.asarray(fn(batch)[2]) * 255**2)

        return run

    one = KMeansSegmentation(k=4, n_init=1, return_inertia=True)
    three = KMeansSegmentation(k=4, n_init=3, return_inertia=True)
    graph = tf.function(one)
    xla = tf.function(one, jit_compile=True)
    xla3 = tf.function(three, jit_compile=True)
    runs = {
        "OpenCV cv2.kmeans (k-means++, attempts=1), loop": ("opencv", opencv),
        "scikit-learn KMeans(n_init=1), loop": ("sklearn1", sklearn(1)),
        "kerasseg KMeansSegmentation(n_init=1), eager, loop": ("eager", layer_loop(one, "eager")),
        "kerasseg, tf.function, loop": ("graph", layer_loop(graph, "graph")),
        "kerasseg, tf.function(jit_compile=True), loop": ("xla", layer_loop(xla, "xla")),
        f"kerasseg, jit, one batch of {n}": ("xla_batch", layer_batch(xla, "xla_batch")),
        "scikit-learn KMeans(n_init=3), loop": ("sklearn3", sklearn(3)),
        "kerasseg KMeansSegmentation(n_init=3), jit, loop": ("xla3", layer_loop(xla3, "xla3")),
    }
    results = {name: median_ms(fn, args.repeats) / n for name, (_, fn) in runs.items()}
    reference = results["OpenCV cv2.kmeans (k-means++, attempts=1), loop"]
    sklearn_inertia = np.mean(inertia["sklearn1"])
    print(
        f"{n} CamVid train frames 360x480 RGB, k=4, median of {args.repeats} runs after a "
        "warm-up (XLA compile excluded)"
    )
    print("| implementation | ms / image | vs OpenCV | mean inertia | vs scikit-learn n_init=1 |")
    print("|---|---|---|---|---|")
    for name, ms in results.items():
        value = np.mean(inertia[runs[name][0]])
        print(
            f"| {name} | {ms:.1f} | {ms / reference:.2f}x | {value:.6g} | "
            f"{value / sklearn_inertia - 1:+.4%} |"
        )


if __name__ == "__main__":
    main()
