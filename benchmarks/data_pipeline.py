"""Input pipeline throughput on CamVid: kerasseg.data vs Keras' directory utility.

Usage: python benchmarks/data_pipeline.py [--data ../shared/data] [--epochs 4] [--train-steps 6]

Task: CamVid train (367 pairs of 480x360 RGB PNG + 8-bit class-id PNG) -> resize to
256x256 (image bilinear, mask nearest) -> joint random horizontal flip -> batches of 8.
Each pipeline is iterated for `epochs` full epochs; the first epoch (graph tracing, file
cache warm-up, filling `cache()`) is reported apart and the rest as a median, in pairs/s.

Pipelines, in the same process:
* keras: `keras.utils.image_dataset_from_directory` twice (images; masks with
  `color_mode="grayscale", interpolation="nearest"`), `labels=None, shuffle=False`,
  zipped, then `keras.layers.RandomFlip("horizontal")` on {"images", "segmentation_masks"},
  the quick path a user would write.
* kerasseg: `kerasseg.datasets.camvid(..., image_size=(256, 256),
  augment=JointAugment(horizontal_flip=True), shuffle=True)`, stateless per-element seeds.
* both again with `.cache()` after decode + resize (augmentation after the cache).

The kerasseg pipeline checks every mask value against the classes (0..10 or the void label
11) in its decode map. That check is timed alone, as pipeline throughput on two cores varies
by more than its cost from run to run: `check_labels` over the 367 decoded masks on one core,
minus the same loop without it, as a share of the CPU time (all threads) that the uncached
pipeline spends per pair. One
`kerasseg.data.survey_masks` pass over the 367 mask files (what `kerasseg train` does once
per run before training) is timed too.

Then a U-Net training step (the 1.9M-parameter original U-Net, base_filters=16, depth 4,
batch 8 at 256x256, 12 classes, sparse categorical cross-entropy) is timed on the same
machine, to show whether the pipeline keeps training fed.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasseg  # noqa: E402
from kerasseg.data import JointAugment  # noqa: E402

SIZE = (256, 256)
BATCH = 8


def keras_quick_path(root, cache):
    common = dict(labels=None, shuffle=False, batch_size=None, image_size=SIZE)
    images = keras.utils.image_dataset_from_directory(root / "train", **common)
    masks = keras.utils.image_dataset_from_directory(
        root / "trainannot", color_mode="grayscale", interpolation="nearest", **common
    )
    dataset = tf.data.Dataset.zip((images, masks))
    if cache:
        dataset = dataset.cache()
    flip = keras.layers.RandomFlip("horizontal", seed=0)

    def augment(image, mask):
        out = flip({"images": image, "segmentation_masks": mask})
        return out["images"], tf.cast(out["segmentation_masks"], tf.int32)

    return (
        dataset.shuffle(367, seed=0)
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )


def kerasseg_path(root, cache):
    dataset, _ = kerasseg.datasets.camvid(
        root,
        subset="train",
        batch_size=BATCH,
        image_size=SIZE,
        augment=JointAugment(horizontal_flip=True),
        shuffle=True,
        seed=0,
        cache=cache,
    )
    return dataset


def pairs_per_second(dataset, epochs):
    rates = []
    for _ in range(epochs):
        count = 0
        start = time.perf_counter()
        for images, _ in dataset:
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
        assert count == 367, count
    return rates[0], statistics.median(rates[1:])


def label_check_cost(root, repeats=7):
    """Milliseconds per mask of the label check alone (`kerasseg.data.check_labels` on the
    367 decoded 360x480 masks, one core, minus the same loop without it; median of
    `repeats`), CPU milliseconds per pair of the whole uncached pipeline (all threads,
    median of the epochs after the first), and the seconds of one survey of the masks."""
    masks = sorted((root / "trainannot").glob("*.png"))
    decoded = tf.stack([kerasseg.data.read_mask(str(p)) for p in masks])

    @tf.function
    def checked(batch):
        total = tf.constant(0, tf.int32)
        for index in tf.range(tf.shape(batch)[0]):
            mask = kerasseg.data.check_labels(batch[index], 11, 11, source="mask")
            total += mask[0, 0, 0]
        return total

    @tf.function
    def unchecked(batch):
        total = tf.constant(0, tf.int32)
        for index in tf.range(tf.shape(batch)[0]):
            total += tf.identity(batch[index])[0, 0, 0]
        return total

    times = {}
    for name, loop in (("checked", checked), ("unchecked", unchecked)):
        loop(decoded)  # trace
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            loop(decoded).numpy()
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs)
    per_mask = 1000 * (times["checked"] - times["unchecked"]) / len(masks)
    cpu = []  # CPU time of all threads per pair of the uncached pipeline, check included
    dataset = kerasseg_path(root, cache=False)
    for _ in range(repeats // 2 + 1):
        start = time.process_time()
        assert sum(int(images.shape[0]) for images, _ in dataset) == len(masks)
        cpu.append(1000 * (time.process_time() - start) / len(masks))
    start = time.perf_counter()
    survey = kerasseg.data.survey_masks(masks, progress=False)
    seconds = time.perf_counter() - start
    assert survey.files == 367 and max(survey.values) == 11
    return per_mask, statistics.median(cpu[1:]), seconds


def train_step_rate(steps):
    model = kerasseg.load("unet", num_classes=12, input_shape=(*SIZE, 3), base_filters=16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 1, (BATCH * steps, *SIZE, 3)).astype("float32")
    masks = np.random.default_rng(1).integers(0, 12, (BATCH * steps, *SIZE, 1)).astype("int32")
    model.fit(images[:BATCH], masks[:BATCH], batch_size=BATCH, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(images, masks, batch_size=BATCH, epochs=1, verbose=0)
    return BATCH * steps / (time.perf_counter() - start), model.count_params()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=6)
    args = parser.parse_args()
    root = Path(args.data) / "camvid"
    print(f"cpus: {os.cpu_count()}  tensorflow {tf.__version__}  keras {keras.__version__}")
    print("| pipeline | cache | first epoch pairs/s | median pairs/s | ratio to keras |")
    print("|---|---|---|---|---|")
    for cache in (False, True):
        results = {}
        for name, build in (("keras", keras_quick_path), ("kerasseg", kerasseg_path)):
            results[name] = pairs_per_second(build(root, cache), args.epochs)
        for name, (first, median) in results.items():
            ratio = median / results["keras"][1]
            print(f"| {name} | {cache} | {first:.0f} | {median:.0f} | {ratio:.2f} |")
    check_ms, pair_cpu_ms, survey = label_check_cost(root)
    share = 100 * check_ms / pair_cpu_ms
    print(
        f"label check: {check_ms:.3f} ms of CPU per 360x480 mask, {share:.1f} % of the uncached "
        f"pipeline's {pair_cpu_ms:.2f} ms of CPU per pair; survey of the 367 mask files: "
        f"{survey:.2f} s"
    )
    rate, params = train_step_rate(args.train_steps)
    print(f"U-Net ({params:,} parameters) training: {rate:.1f} pairs/s at 256x256, batch 8")


if __name__ == "__main__":
    main()
