"""Training recipe for a U-Net on ISBI 2012 EM membranes with TensorFlow (tf.data, CPU or GPU).

Data: the 25 labelled slices; slices 20..24 are the validation split
(`kerasseg.datasets.isbi2012`), 00..19 train. Model: the original U-Net (Ronneberger et
al. 2015) with batch norm and one sigmoid channel = probability of cell interior;
normalisation (x / 255) and reflection padding to a multiple of 16 happen inside the model,
so it takes raw 0..255 slices of any size. Augmentation (`AUGMENT_OPTIONS`): random
256x256 crops with flips, 90-degree turns, scale 0.8-1.25, rotation +-15 degrees and elastic
deformation (the paper's key augmentation), mild brightness / contrast / gamma / noise.
Loss: binary cross-entropy + Dice; Adam with cosine decay; the epoch with the lowest
validation loss (full 512x512 slices) is kept.

    python benchmarks/train_unet_isbi2012.py --data PATH/isbi2012-membrane --out runs/a

This is the TensorFlow route (`kerasseg.training.train`, augmentation on the fly in tf.data,
resumable checkpoints), enough for a CPU. The shipped `unet_isbi2012` preset was trained on a
GPU with `benchmarks/train_jax.py` (recipe `isbi2012`).

Results so far (validation slices 20..24, hardware and times): benchmarks/README.md.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import kerasseg  # noqa: E402
from kerasseg import metrics  # noqa: E402

MODEL_ARGUMENTS = {
    "input_shape": (None, None, 1),
    "num_classes": 1,
    "base_filters": 16,
    "depth": 4,
    "batch_norm": True,
    "activation": "sigmoid",
    "include_preprocessing": True,
    "pad_to_fit": True,
}
AUGMENT_OPTIONS = dict(
    horizontal_flip=True,
    vertical_flip=True,
    rotate90=True,
    scale_range=(0.8, 1.25),
    crop_size=(256, 256),
    rotation_degrees=15.0,
    elastic_alpha=200.0,
    elastic_sigma=10.0,
    brightness=0.05,
    contrast=0.2,
    gamma=0.2,
    noise_std=0.01,
)


def _metrics():
    return [
        metrics.PixelAccuracy(num_classes=2, name="pixel_accuracy"),
        metrics.DiceScore(num_classes=2, classes=[0], name="membrane_dice"),
        metrics.VRand(name="v_rand"),
    ]


def _augment():
    from kerasseg.data import JointAugment

    return JointAugment(**AUGMENT_OPTIONS)


def fit(args):
    """Augment on the fly with tf.data and train with `kerasseg.training.train`."""
    from kerasseg import training

    model_arguments = {**MODEL_ARGUMENTS, "base_filters": args.base_filters}
    train_data, _ = kerasseg.datasets.isbi2012(
        args.data,
        subset="train",
        batch_size=args.batch_size,
        augment=_augment(),
        shuffle=True,
        seed=args.seed,
        cache=True,
        repeat=True,
    )
    validation_data, _ = kerasseg.datasets.isbi2012(
        args.data, subset="validation", batch_size=5, cache=True
    )
    start = time.time()
    run = training.train(
        "unet",
        train_data,
        model_arguments=model_arguments,
        validation_data=validation_data,
        output_dir=args.out,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        loss="bce+dice",
        metrics=_metrics(),
        learning_rate=args.learning_rate,
        schedule="cosine",
        monitor="val_loss",
        seed=args.seed,
        verbose=2,
        run_config={"command": [sys.executable, *sys.argv], "augment": AUGMENT_OPTIONS},
    )
    return {"seconds": round(time.time() - start), "epochs": len(run.history)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the isbi2012-membrane folder")
    parser.add_argument("--out", required=True, help="output folder (reuse it to resume)")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--base-filters", type=int, default=MODEL_ARGUMENTS["base_filters"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = fit(args)
    (pathlib.Path(args.out) / "summary.json").write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
