"""Training recipe for a U-Net on ISBI 2012 EM membranes (the planned `unet_isbi2012` preset).

Data: the 25 labelled slices; slices 20..24 are the validation split
(`kerasseg.datasets.isbi2012`), 00..19 train. Model: the original U-Net (Ronneberger et
al. 2015) with batch norm and one sigmoid channel = probability of cell interior;
normalisation (x / 255) and reflection padding to a multiple of 16 happen inside the model,
so it takes raw 0..255 slices of any size. Augmentation (`AUGMENT_OPTIONS`): random
256x256 crops with flips, 90-degree turns, scale 0.8-1.25, rotation +-15 degrees and elastic
deformation (the paper's key augmentation), mild brightness / contrast / gamma / noise.
Loss: binary cross-entropy + Dice; Adam with cosine decay; the epoch with the lowest
validation loss (full 512x512 slices) is kept.

Two ways to run it:

    # One process, augmentation on the fly in tf.data (TensorFlow backend, CPU is enough):
    python benchmarks/train_unet_isbi2012.py fit --data PATH/isbi2012-membrane --out runs/a

    # Or: draw a fixed set of augmented crops with the same tf.data pipeline, then fit on
    # them with any Keras backend (e.g. JAX on a GPU machine without TensorFlow), adding a
    # random flip / quarter turn per batch:
    python benchmarks/train_unet_isbi2012.py crops --data PATH/isbi2012-membrane \\
        --crops 640 --file crops.npz
    KERAS_BACKEND=jax python benchmarks/train_unet_isbi2012.py fit-crops --file crops.npz \\
        --out runs/b

Results so far (validation slices 20..24, hardware and times): benchmarks/README.md.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kerasseg  # noqa: E402
from kerasseg import losses, metrics  # noqa: E402

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


def crops(args):
    """Write `--crops` augmented training crops and the validation slices to `--file`."""
    train_data, _ = kerasseg.datasets.isbi2012(
        args.data, subset="train", batch_size=1, augment=_augment(), shuffle=True,
        seed=args.seed, cache=True, repeat=True,
    )  # fmt: skip
    images, masks = [], []
    for image, mask in train_data.take(args.crops):
        images.append(np.round(image.numpy()[0]).astype(np.uint8))
        masks.append(mask.numpy()[0].astype(np.uint8))
    validation, _ = kerasseg.datasets.isbi2012(args.data, subset="validation", batch_size=5)
    val_images, val_masks = next(iter(validation))
    np.savez_compressed(
        args.file,
        images=np.stack(images),
        masks=np.packbits(np.stack(masks), axis=2),
        val_images=val_images.numpy().astype(np.uint8),
        val_masks=val_masks.numpy().astype(np.uint8),
        augment=json.dumps(AUGMENT_OPTIONS),
        seed=args.seed,
    )
    return {"crops": len(images), "bytes": pathlib.Path(args.file).stat().st_size}


class _DihedralBatches(keras.utils.PyDataset):
    """Random batches of the crops, each turned by a random flip and quarter turn."""

    def __init__(self, images, masks, batch_size, steps, seed):
        super().__init__()
        self.images, self.masks = images, masks
        self.batch_size, self.steps = batch_size, steps
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        pick = self.rng.integers(0, len(self.images), self.batch_size)
        x, y = self.images[pick], self.masks[pick]
        turns, flip = self.rng.integers(0, 4), self.rng.integers(0, 2)
        x, y = np.rot90(x, turns, axes=(1, 2)), np.rot90(y, turns, axes=(1, 2))
        if flip:
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        return x.astype("float32"), y.astype("float32")


def fit_crops(args):
    """Train on the crops of `crops` with plain Keras (any backend)."""
    keras.utils.set_random_seed(args.seed)
    data = np.load(args.file)
    images = data["images"]
    masks = np.unpackbits(data["masks"], axis=2, count=images.shape[2])
    model = kerasseg.load("unet", **{**MODEL_ARGUMENTS, "base_filters": args.base_filters})
    steps = args.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps * args.epochs)
    terms = [(losses.CrossEntropyLoss(mode="binary"), 1.0)]
    if args.loss == "bce+dice":
        terms.append((losses.DiceLoss(mode="binary"), 1.0))
    loss = losses.WeightedSum(terms)
    model.compile(keras.optimizers.Adam(schedule), loss=loss, metrics=_metrics())
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    best = keras.callbacks.ModelCheckpoint(
        out / "best.weights.h5", monitor="val_loss", save_best_only=True, save_weights_only=True
    )
    start = time.time()
    history = model.fit(
        _DihedralBatches(images, masks, args.batch_size, steps, args.seed),
        epochs=args.epochs,
        validation_data=(
            data["val_images"].astype("float32"),
            data["val_masks"].astype("float32"),
        ),
        validation_batch_size=5,
        callbacks=[best, keras.callbacks.CSVLogger(out / "history.csv")],
        verbose=2,
    )
    # The preset's file: the best epoch's weights in a fresh model, without optimizer state.
    model.load_weights(out / "best.weights.h5")
    preset = kerasseg.load("unet", **{**MODEL_ARGUMENTS, "base_filters": args.base_filters})
    preset.set_weights(model.get_weights())
    preset.save_weights(out / "unet_isbi2012.weights.h5")
    losses_seen = history.history["val_loss"]
    return {
        "seconds": round(time.time() - start),
        "epochs": len(losses_seen),
        "best_epoch": int(np.argmin(losses_seen)),
        "backend": keras.backend.backend(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("fit", "crops", "fit-crops"))
    parser.add_argument("--data", help="the isbi2012-membrane folder (fit, crops)")
    parser.add_argument("--out", help="output folder (fit, fit-crops; reuse it to resume fit)")
    parser.add_argument("--file", help="the crops file (crops, fit-crops)")
    parser.add_argument("--crops", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--base-filters", type=int, default=MODEL_ARGUMENTS["base_filters"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--loss",
        choices=("bce+dice", "bce"),
        default="bce+dice",
        help="fit-crops only (fit uses bce+dice)",
    )
    args = parser.parse_args(argv)
    needed = {"fit": ("data", "out"), "crops": ("data", "file"), "fit-crops": ("file", "out")}
    missing = [f"--{name}" for name in needed[args.stage] if getattr(args, name) is None]
    if missing:
        parser.error(f"{args.stage} needs {' and '.join(missing)}")
    summary = {"fit": fit, "crops": crops, "fit-crops": fit_crops}[args.stage](args)
    if args.out:
        (pathlib.Path(args.out) / "summary.json").write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
