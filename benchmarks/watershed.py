"""Seeded watershed speed and agreement: kerasseg's `SeededWatershed` vs scikit-image.

Usage: python benchmarks/watershed.py [--data ../shared/data] [--repeats 5]

Input: the `unet_isbi2012` preset's interior probabilities for ISBI 2012 slices 20..24
(512x512, the validation split). Seeds: 4-connected regions of p > 0.9; both flood 1 - p
from them with 4-connectivity (scikit-image's priority queue; kerasseg's minimum spanning
forest, Borůvka rounds). Reports ms per image (medians of `repeats` runs, timed round-robin
after one warm-up / XLA compilation), the rounds, the agreement of the two labellings (pixels
with the same label, adapted Rand F-score) and each one's V_rand against the true cells.
"""

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from skimage.measure import label
from skimage.metrics import adapted_rand_error
from skimage.segmentation import watershed
from timing import interleaved

import kerasseg
from kerasseg.classical.watershed import SeededWatershed
from kerasseg.ops.flooding import flood_from_seeds

SEEDS = 0.9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(args.data) / "isbi2012-membrane" / "train"
    slices = range(20, 25)
    images = np.stack([np.asarray(Image.open(root / "image" / f"{i}.png")) for i in slices])
    truth = np.stack([np.asarray(Image.open(root / "label" / f"{i}.png")) for i in slices])
    model = kerasseg.load("unet_isbi2012")
    probabilities = model.predict(images[..., None].astype("float32"), verbose=0)
    layer = SeededWatershed(seed_threshold=SEEDS)
    xla = tf.function(layer, jit_compile=True)
    batch = tf.constant(probabilities)

    def scikit_image():
        return np.stack(
            [
                watershed(1 - p[..., 0], label(p[..., 0] > SEEDS, connectivity=1), connectivity=1)
                for p in probabilities
            ]
        )

    ours, reference = xla(batch).numpy(), scikit_image()
    timings = interleaved(
        {
            "scikit-image watershed (one by one)": scikit_image,
            f"kerasseg SeededWatershed (XLA, batch of {len(images)})": lambda: xla(batch).numpy(),
        },
        args.repeats,
        warmups=1,
    )
    print("| implementation | ms / image | vs scikit-image |\n|---|---|---|")
    base = timings["scikit-image watershed (one by one)"][0]
    for name, (ms, _, _) in timings.items():
        print(f"| {name} | {ms / len(images):.1f} | {ms / base:.2f}x |")
    seeds = np.stack([label(p[..., 0] > SEEDS, connectivity=1) for p in probabilities])
    level = layer.quantise(batch[..., 0])
    rounds = tf.function(flood_from_seeds, jit_compile=True)(level, seeds.astype(np.int32))[1]
    print(f"\nBorůvka rounds: {int(rounds)} ({layer.levels} levels)")
    same = np.mean(ours == reference)
    agreement = np.mean(
        [1 - adapted_rand_error(r, o)[0] for r, o in zip(reference, ours, strict=True)]
    )
    print(f"\nsame label: {same:.4f} of pixels; adapted Rand F vs scikit-image: {agreement:.4f}")
    cells = [label(t == 255, connectivity=1) for t in truth]
    for name, labels in (("kerasseg", ours), ("scikit-image", reference)):
        v_rand = np.mean(
            [1 - adapted_rand_error(t, p)[0] for t, p in zip(cells, labels, strict=True)]
        )
        print(f"V_rand against the true cells, {name}: {v_rand:.4f}")


if __name__ == "__main__":
    main()
