"""Train the shipped U-Net presets with Keras on the JAX backend, augmenting on the GPU.

Recipes (each builds `kerasseg.load("unet", **MODEL_ARGUMENTS[recipe])`):
- `isbi2012` -> `unet_isbi2012`: ISBI 2012 EM slices 00..19 train, 20..24 validation
  (`kerasseg.datasets.isbi2012`); one sigmoid channel = probability of cell interior.
  Augmentation as in Ronneberger et al. 2015: any rotation, flips, scale 0.8-1.25, elastic
  deformation (random displacements on a coarse grid, bicubic), contrast / brightness /
  gamma / noise; 256x256 crops. Loss binary cross-entropy (`--loss ce+dice` adds Dice, which
  scored lower on the validation slices); the final moving average of the weights is kept.
- `camvid` -> `unet_camvid`: CamVid train (367 frames) only; val (101) is measured, never
  used for choosing. 11 softmax channels in the class order of the data README, void (11)
  ignored. Augmentation: scale 0.5-1.4, rotation +-10 degrees, horizontal flip, brightness /
  contrast / saturation; 352x352 crops, padding with void. Loss cross-entropy + Dice. The last
  step's weights are kept (cosine decay to zero).

Both: Adam, cosine decay with warm-up, mixed bfloat16 on the accelerator, float32 weights.
Augmentation is one jitted JAX function per batch (`augment_batch`), so the data never
leaves the GPU and no TensorFlow is needed.

    # where the data is (TensorFlow backend): a compact copy for the GPU machine
    python benchmarks/train_jax.py pack --recipe camvid --data PATH/camvid --file camvid.npz
    # on the GPU machine (KERAS_BACKEND=jax):
    python benchmarks/train_jax.py fit --recipe camvid --file camvid.npz --out runs/c \\
        --steps 6000 --seed 0

`fit` writes `weights_f16.npz` (float16 arrays in `model.get_weights()` order), the history
CSV and `summary.json`; `to-preset` turns the arrays into a `.weights.h5`. `--time-budget S`
measures the step time first and picks the largest `--steps` (a multiple of 100) that fits,
writing the number to the summary, so the run can be repeated with that `--steps`.
`fit --init FILE` starts from a `.weights.h5` of the recipe's model (fine-tuning a preset)
instead of a fresh initialisation; with the moving average, the average starts there too.
The model can run on any Keras backend (`--precision float32` on CPUs); the augmentation
always runs in JAX.
"""

import argparse
import copy
import io
import json
import os
import pathlib
import sys
import time

import numpy as np

PROCESS_START = time.time()

RECIPES = {
    "isbi2012": {
        "model": {
            "input_shape": (None, None, 1),
            "num_classes": 1,
            "base_filters": 32,
            "depth": 4,
            "batch_norm": True,
            "activation": "sigmoid",
            "include_preprocessing": True,
            "pad_to_fit": True,
        },
        "crop": (256, 256),
        "batch_size": 16,
        "learning_rate": 2e-3,
        "augment": {
            "scale": (0.8, 1.25),
            "rotation_degrees": 180.0,
            "horizontal_flip": True,
            "vertical_flip": True,
            "elastic_std": 8.0,
            "elastic_grid": 5,
            "brightness": 0.06,
            "contrast": 0.2,
            "gamma": 0.2,
            "saturation": 0.0,
            "noise_std": 0.02,
            "mode": "reflect",
            "label_interpolation": "linear",
        },
        "loss": "ce",
        "steps_per_epoch": 250,
        "ema_momentum": 0.999,
    },
    "camvid": {
        "model": {
            "input_shape": (None, None, 3),
            "num_classes": 11,
            "base_filters": 32,
            "depth": 4,
            "batch_norm": True,
            "activation": "softmax",
            "include_preprocessing": True,
            "pad_to_fit": True,
        },
        "crop": (352, 352),
        "batch_size": 16,
        "learning_rate": 2e-3,
        "augment": {
            "scale": (0.5, 1.4),
            "rotation_degrees": 10.0,
            "horizontal_flip": True,
            "vertical_flip": False,
            "elastic_std": 0.0,
            "elastic_grid": 3,
            "brightness": 0.1,
            "contrast": 0.2,
            "gamma": 0.0,
            "saturation": 0.3,
            "noise_std": 0.0,
            "mode": "constant",
            "label_interpolation": "nearest",
        },
        "loss": "ce+dice",
        "steps_per_epoch": 250,
        "ema_momentum": None,
    },
}
CAMVID_VOID = 11


# --- pack: the compact data file (needs TensorFlow for PNG decoding / JPEG encoding) ---


def pack(args):
    import tensorflow as tf

    folder = pathlib.Path(args.data)
    if args.recipe == "isbi2012":
        names = sorted((folder / "train" / "image").glob("*.png"))
        images = np.stack([tf.io.decode_png(n.read_bytes(), 1).numpy() for n in names])
        labels = np.stack(
            [
                tf.io.decode_png((folder / "train/label" / n.name).read_bytes(), 1).numpy()
                for n in names
            ]
        )
        labels = (labels > 127).astype(np.uint8)
        np.savez_compressed(
            args.file,
            images=images[:20], labels=labels[:20],
            val_images=images[20:], val_labels=labels[20:],
        )  # fmt: skip
    else:
        arrays = {}
        for split, prefix in (("train", ""), ("val", "val_")):
            names = sorted((folder / split).glob("*.png"))
            jpegs = [
                tf.io.encode_jpeg(
                    tf.io.decode_png(n.read_bytes(), 3), quality=95, chroma_downsampling=False
                ).numpy()
                for n in names
            ]
            arrays[prefix + "jpeg"] = np.frombuffer(b"".join(jpegs), np.uint8)
            arrays[prefix + "jpeg_sizes"] = np.array([len(j) for j in jpegs])
            arrays[prefix + "labels"] = np.stack(
                [
                    tf.io.decode_png((folder / f"{split}annot" / n.name).read_bytes(), 1).numpy()
                    for n in names
                ]
            )
        np.savez_compressed(args.file, **arrays)
    return {"bytes": pathlib.Path(args.file).stat().st_size}


def _decode_jpegs(buffer, sizes):
    from PIL import Image

    ends = np.cumsum(sizes)
    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(buffer[e - s : e].tobytes())).convert("RGB"))
            for s, e in zip(sizes, ends, strict=True)
        ]
    )


def load_data(recipe, file):
    """(train images, train labels, val images, val labels) as uint8 numpy, NHWC."""
    data = np.load(file)
    if recipe == "isbi2012":
        return data["images"], data["labels"], data["val_images"], data["val_labels"]
    return (
        _decode_jpegs(data["jpeg"], data["jpeg_sizes"]),
        data["labels"],
        _decode_jpegs(data["val_jpeg"], data["val_jpeg_sizes"]),
        data["val_labels"],
    )


# --- augmentation on the accelerator (JAX) ---


def augment_batch(key, images, labels, crop, batch_size, options, label_fill):
    """A batch of augmented crops: float32 images (0..255) and labels, drawn from the stack.

    One affine map per crop (scale `s` = source pixels per output pixel, rotation, flips)
    plus an optional elastic field (normal displacements of std `elastic_std` pixels on an
    `elastic_grid` x `elastic_grid` grid, bicubic up-sampling; Ronneberger et al. 2015),
    sampled with `jax.scipy.ndimage.map_coordinates`: bilinear for images, nearest or
    bilinear-then-0.5 for labels. Then per-image photometric changes.
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.ndimage import map_coordinates

    o = options
    n, src_h, src_w, channels = images.shape
    out_h, out_w = crop
    keys = jax.random.split(key, 13)
    pick = jax.random.randint(keys[0], (batch_size,), 0, n)
    lo, hi = np.log(o["scale"][0]), np.log(o["scale"][1])
    scale = jnp.exp(jax.random.uniform(keys[1], (batch_size,), minval=lo, maxval=hi))
    angle = np.deg2rad(o["rotation_degrees"]) * jax.random.uniform(
        keys[2], (batch_size,), minval=-1.0, maxval=1.0
    )
    flip_x = jnp.where(
        o["horizontal_flip"] & jax.random.bernoulli(keys[3], 0.5, (batch_size,)), -1.0, 1.0
    )
    flip_y = jnp.where(
        o["vertical_flip"] & jax.random.bernoulli(keys[4], 0.5, (batch_size,)), -1.0, 1.0
    )

    def centre(key, extent, size):
        low = jnp.minimum(extent, size / 2)
        return jax.random.uniform(key, (batch_size,)) * (size - 2 * low) + low

    centre_y = centre(keys[5], scale * out_h / 2, src_h)
    centre_x = centre(keys[6], scale * out_w / 2, src_w)
    u = (jnp.arange(out_h) - (out_h - 1) / 2)[None, :, None] * flip_y[:, None, None]
    v = (jnp.arange(out_w) - (out_w - 1) / 2)[None, None, :] * flip_x[:, None, None]
    cos, sin = (jnp.cos(angle) * scale)[:, None, None], (jnp.sin(angle) * scale)[:, None, None]
    y = centre_y[:, None, None] + cos * u - sin * v
    x = centre_x[:, None, None] + sin * u + cos * v
    if o["elastic_std"] > 0:
        grid = o["elastic_grid"]
        coarse = o["elastic_std"] * jax.random.normal(keys[7], (batch_size, grid, grid, 2))
        field = jax.image.resize(coarse, (batch_size, out_h, out_w, 2), "cubic")
        y, x = y + field[..., 0], x + field[..., 1]
    index = jnp.broadcast_to(pick[:, None, None], y.shape).astype(jnp.float32)
    mode = o["mode"]

    def sample(stack, order, cval):
        return jnp.stack(
            [
                map_coordinates(
                    stack[..., c].astype(jnp.float32),
                    [index, y, x],
                    order=order,
                    mode=mode,
                    cval=cval,
                )
                for c in range(stack.shape[-1])
            ],
            axis=-1,
        )

    out_images = sample(images, 1, 0.0)
    if o["label_interpolation"] == "nearest":
        out_labels = sample(labels, 0, float(label_fill))
    else:
        out_labels = (sample(labels, 1, float(label_fill)) > 0.5).astype(jnp.float32)

    def per_image(key, spread):
        return 1.0 + spread * jax.random.uniform(
            key, (batch_size, 1, 1, 1), minval=-1.0, maxval=1.0
        )

    mean = out_images.mean(axis=(1, 2, 3), keepdims=True)
    out_images = (out_images - mean) * per_image(keys[8], o["contrast"]) + mean
    out_images = out_images + 255.0 * (per_image(keys[9], o["brightness"]) - 1.0)
    if channels == 3 and o["saturation"] > 0:
        grey = out_images.mean(axis=-1, keepdims=True)
        out_images = grey + (out_images - grey) * per_image(keys[10], o["saturation"])
    out_images = jnp.clip(out_images, 0.0, 255.0)
    if o["gamma"] > 0:
        out_images = 255.0 * (out_images / 255.0) ** per_image(keys[12], o["gamma"])
    if o["noise_std"] > 0:
        out_images = out_images + 255.0 * o["noise_std"] * jax.random.normal(
            keys[11], out_images.shape
        )
    return jnp.clip(out_images, 0.0, 255.0), out_labels


# --- fit (any Keras backend for the model; JAX for the augmentation) ---


def recipe_of(args):
    """The recipe `args.recipe` with the overrides given on the command line."""
    recipe = copy.deepcopy(RECIPES[args.recipe])
    recipe["name"] = args.recipe
    if args.base_filters:
        recipe["model"]["base_filters"] = args.base_filters
    if args.crop:
        recipe["crop"] = (args.crop, args.crop)
    if args.loss:
        recipe["loss"] = args.loss
    return recipe


def _model(recipe):
    import kerasseg

    return kerasseg.load("unet", **recipe["model"])


def _loss(recipe):
    """Cross-entropy ("ce") or cross-entropy + Dice ("ce+dice"), equally weighted."""
    from kerasseg import losses

    if recipe["name"] == "isbi2012":
        terms = [(losses.CrossEntropyLoss(mode="binary"), 1.0)]
        if recipe["loss"] == "ce+dice":
            terms.append((losses.DiceLoss(mode="binary"), 1.0))
    else:
        terms = [(losses.CrossEntropyLoss(mode="multiclass", ignore_label=CAMVID_VOID), 1.0)]
        if recipe["loss"] == "ce+dice":
            terms.append((losses.DiceLoss(mode="multiclass", ignore_label=CAMVID_VOID), 1.0))
    return losses.WeightedSum(terms)


def confusion(labels, predicted, num_classes):
    """Confusion matrix (true x predicted) over pixels whose label is < num_classes."""
    keep = labels < num_classes
    return np.bincount(
        labels[keep].astype(np.int64) * num_classes + predicted[keep], minlength=num_classes**2
    ).reshape(num_classes, num_classes)


def scores_from_confusion(matrix):
    """Per-class IoU, mean IoU and global pixel accuracy of a confusion matrix."""
    true, predicted, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    iou = hits / np.maximum(true + predicted - hits, 1)
    return {
        "iou": iou.tolist(),
        "mean_iou": float(iou.mean()),
        "accuracy": float(hits.sum() / matrix.sum()),
    }


def fit(args):
    import jax
    import keras

    recipe = recipe_of(args)
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(args.seed)
    images, labels, val_images, val_labels = load_data(args.recipe, args.file)
    label_fill = CAMVID_VOID if args.recipe == "camvid" else 0
    device_images, device_labels = jax.device_put(images), jax.device_put(labels)
    batch_size = args.batch_size or recipe["batch_size"]

    @jax.jit
    def draw(key):
        return augment_batch(
            key,
            device_images,
            device_labels,
            recipe["crop"],
            batch_size,
            recipe["augment"],
            label_fill,
        )

    class Batches(keras.utils.PyDataset):
        def __init__(self, seed, length):
            super().__init__()
            self.key, self.length, self.count = jax.random.key(seed), length, 0

        def __len__(self):
            return self.length

        def __getitem__(self, index):
            self.count += 1
            return draw(jax.random.fold_in(self.key, self.count))

    def build(total_steps):
        model = _model(recipe)
        if args.init:
            model.load_weights(args.init)
        warmup = max(1, min(200, total_steps // 10))
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, total_steps - warmup, warmup_target=args.learning_rate or recipe["learning_rate"],
            warmup_steps=warmup,
        )  # fmt: skip
        ema = recipe["ema_momentum"]
        optimizer = keras.optimizers.Adam(
            schedule, use_ema=ema is not None, ema_momentum=ema or 0.99
        )
        model.compile(optimizer, loss=_loss(recipe))
        return model

    steps_per_epoch = args.steps_per_epoch or recipe["steps_per_epoch"]
    steps, probe = args.steps, None
    if args.time_budget:
        model = build(1000)
        model.fit(Batches(args.seed + 1, args.probe_steps // 2), epochs=1, verbose=0)
        start = time.time()
        model.fit(Batches(args.seed + 2, args.probe_steps), epochs=1, verbose=0)
        probe = (time.time() - start) / args.probe_steps
        steps = max(steps_per_epoch, int(args.time_budget / probe) // 100 * 100)
        print(f"probe: {probe * 1000:.1f} ms/step -> --steps {steps}", flush=True)
    epochs = -(-steps // steps_per_epoch)
    steps = epochs * steps_per_epoch
    model = build(steps)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    history_file = (out / "history.csv").open("w")
    started = time.time()

    class Validate(keras.callbacks.Callback):
        """Measure the validation split at each epoch end; keep the weights to ship."""

        def on_epoch_end(self, epoch, logs=None):
            result = evaluate(model, recipe, val_images, val_labels)
            row = {
                "epoch": epoch + 1,
                "seconds": round(time.time() - started, 1),
                "loss": logs["loss"],
            }
            row.update(result)
            if epoch == 0:
                history_file.write(",".join(row) + "\n")
            history_file.write(",".join(str(v) for v in row.values()) + "\n")
            history_file.flush()
            print(json.dumps(row), flush=True)
            # A safety copy; the final weights replace it.
            np.savez(out / "weights_f16.npz", *[w.astype(np.float16) for w in model.get_weights()])

    class Stop(keras.callbacks.Callback):
        """Stop after `--deadline` seconds from the start of the process (a safety net), or
        after epoch `--stop-epoch` (to repeat a run that a deadline stopped)."""

        def on_train_batch_end(self, batch, logs=None):
            if args.deadline and time.time() - PROCESS_START > args.deadline:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if args.stop_epoch and epoch + 1 >= args.stop_epoch:
                self.model.stop_training = True

    model.fit(
        Batches(args.seed, steps_per_epoch),
        epochs=epochs,
        verbose=0,
        callbacks=[Validate(), Stop()],
    )
    # After fit: the final weights (the moving average of the weights where `ema_momentum`).
    final = evaluate(model, recipe, val_images, val_labels)
    np.savez(out / "weights_f16.npz", *[w.astype(np.float16) for w in model.get_weights()])
    summary = {
        "recipe": args.recipe,
        "final_validation": final,
        "steps": steps,
        "epochs": epochs,
        "stopped_early": bool(model.stop_training),
        "epochs_done": len(model.history.epoch),
        "seconds": round(time.time() - started),
        "probe_ms_per_step": None if probe is None else round(probe * 1000, 1),
        "batch_size": batch_size,
        "precision": args.precision,
        "backend": keras.backend.backend(),
        "device": str(jax.devices()[0].device_kind),
        "seed": args.seed,
        "parameters": model.count_params(),
        "command": ["python", "benchmarks/train_jax.py", "fit", "--recipe", args.recipe, "--file",
                    "DATA.npz", "--out", "OUT", "--steps", str(steps), "--seed", str(args.seed)],
    }  # fmt: skip
    return summary


def evaluate(model, recipe, images, labels):
    """Validation loss and scores of `model` on whole images (the model pads inside)."""
    loss = _loss(recipe)
    probabilities = np.concatenate(
        [
            np.asarray(model.predict_on_batch(images[i : i + 8].astype("float32")))
            for i in range(0, len(images), 8)
        ]
    )
    result = {"val_loss": float(loss(labels.astype("float32"), probabilities))}
    if recipe["name"] == "isbi2012":
        from skimage.metrics import adapted_rand_error

        predicted = probabilities[..., 0] > 0.5
        truth = labels[..., 0] > 0
        result["val_pixel_accuracy"] = float((predicted == truth).mean())
        result["val_v_rand"] = float(
            np.mean(
                [_v_rand(t, p, adapted_rand_error) for t, p in zip(truth, predicted, strict=True)]
            )
        )
    else:
        scores = scores_from_confusion(confusion(labels[..., 0], probabilities.argmax(-1), 11))
        result["val_mean_iou"] = scores["mean_iou"]
        result["val_accuracy"] = scores["accuracy"]
    return result


def _v_rand(truth, predicted, adapted_rand_error):
    """Foreground-restricted Rand F-score of the 4-connected interior regions."""
    from scipy import ndimage

    true_regions = ndimage.label(truth)[0]
    predicted_regions = ndimage.label(predicted)[0]
    return 1.0 - adapted_rand_error(true_regions, predicted_regions, ignore_labels=(0,))[0]


def to_preset(args):
    """The float16 arrays of `fit` as a `.weights.h5` (float16 storage, float32 once loaded)."""
    from kerasseg.weights import save_weights_float16

    model = _model(recipe_of(args))
    arrays = np.load(args.file)
    model.set_weights([arrays[f"arr_{i}"].astype(np.float32) for i in range(len(arrays.files))])
    save_weights_float16(model, args.out)
    return {"bytes": pathlib.Path(args.out).stat().st_size}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("pack", "fit", "to-preset"))
    parser.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    parser.add_argument("--data", help="pack: the data set folder")
    parser.add_argument("--file", help="pack: output; fit: data file; to-preset: weights_f16.npz")
    parser.add_argument("--out", help="fit: output folder; to-preset: the .weights.h5 to write")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--time-budget", type=float, help="fit: seconds of training to fit")
    parser.add_argument("--probe-steps", type=int, default=60, help="fit: timed steps")
    parser.add_argument("--stop-epoch", type=int, help="fit: stop after this epoch")
    parser.add_argument("--deadline", type=float, help="fit: stop after this many seconds")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--base-filters", type=int, help="fit, to-preset: the U-Net's width")
    parser.add_argument("--crop", type=int, help="fit: square training crop side")
    parser.add_argument("--loss", choices=("ce", "ce+dice"), help="fit: the loss")
    parser.add_argument(
        "--precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "float32")
    )
    parser.add_argument("--init", help="fit: a .weights.h5 of the recipe's model to start from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    needed = {"pack": ("data", "file"), "fit": ("file", "out"), "to-preset": ("file", "out")}
    missing = [f"--{name}" for name in needed[args.stage] if getattr(args, name) is None]
    if missing:
        parser.error(f"{args.stage} needs {' and '.join(missing)}")
    summary = {"pack": pack, "fit": fit, "to-preset": to_preset}[args.stage](args)
    if args.stage == "fit":
        summary["argv"] = sys.argv[1:]
        (pathlib.Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
