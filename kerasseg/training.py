"""Training around `model.fit`: losses by name, schedules, checkpoints, resume, logs.

`train` builds the model (inside a `tf.distribute` strategy scope when one is asked for),
compiles it and runs `fit` with callbacks that make a run safe to interrupt:

* `output_dir/backup/`: `keras.callbacks.BackupAndRestore` state (weights, optimizer and
  epoch) saved at every epoch end, the previous one kept as well (a kill while it is
  written falls back to it); running the same `train` call again resumes from the
  epoch after the last completed one (the input pipeline restarts its own epoch count, so
  augmentation draws of a resumed run differ from an uninterrupted one).
* `history.csv`: one row per epoch; rows of epochs that are run again after a resume are
  replaced, so each epoch appears once.
* `best.keras` and `best.json`: the model at the best `monitor` value (best-so-far is
  restored from `history.csv` after a resume), `final.keras` at the end, `run.json` with
  the configuration, and TensorBoard logs in `tensorboard/`.

Multi-worker training with `model.fit` is broken upstream (keras-team/keras issue 20585);
`strategy="mirrored"` (one machine, several devices) works.
"""

import csv
import dataclasses
import json
import math
import pathlib
import re

import keras
import tensorflow as tf

from kerasseg import losses as losses_lib
from kerasseg import metrics as metrics_lib
from kerasseg.prediction import output_is_logits

LOSS_NAMES = {
    "ce": losses_lib.CrossEntropyLoss,
    "bce": losses_lib.CrossEntropyLoss,
    "dice": losses_lib.DiceLoss,
    "jaccard": losses_lib.JaccardLoss,
    "focal": losses_lib.FocalLoss,
    "tversky": losses_lib.TverskyLoss,
    "focal_tversky": losses_lib.FocalTverskyLoss,
    "lovasz": losses_lib.LovaszLoss,
}
SCHEDULES = ("constant", "cosine", "poly")
OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "sgd": keras.optimizers.SGD}  # fmt: skip
PRECISION_POLICIES = (None, "float32", "mixed_float16", "mixed_bfloat16")
_TERM = re.compile(r"^(?:(?P<weight>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\*)?(?P<name>[a-z_]+)$")


@dataclasses.dataclass
class TrainingRun:
    """What `train` returns: the trained model, its epoch history and where it saved."""

    model: keras.Model
    history: list
    output_dir: pathlib.Path
    best_path: pathlib.Path
    final_path: pathlib.Path


def loss_from_spec(spec, *, num_classes, from_logits, ignore_label=None):
    """A loss from a spec such as "bce", "ce+dice" or "0.5*focal+dice".

    Terms are names of `LOSS_NAMES`, optionally weighted as `w*name`, joined by "+"; more
    than one term gives a `WeightedSum`. `num_classes` 1 means a binary (sigmoid) model,
    more a multiclass (softmax) one. A `keras.losses.Loss` instance is returned as is.
    """
    if isinstance(spec, keras.losses.Loss):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"`loss` must be a keras Loss or a spec like 'bce+dice'; got {spec!r}. Names: "
            f"{sorted(LOSS_NAMES)}."
        )
    mode = "binary" if num_classes == 1 else "multiclass"
    terms = []
    for text in spec.replace(" ", "").lower().split("+"):
        match = _TERM.match(text)
        if not match or match["name"] not in LOSS_NAMES:
            raise ValueError(
                f"`loss`: cannot read the term {text!r} of {spec!r}; terms are a name of "
                f"{sorted(LOSS_NAMES)}, optionally weighted as '0.5*dice'."
            )
        loss = LOSS_NAMES[match["name"]](
            mode=mode, from_logits=from_logits, ignore_label=ignore_label
        )
        terms.append((loss, float(match["weight"] or 1.0)))
    if len(terms) == 1 and terms[0][1] == 1.0:
        return terms[0][0]
    return losses_lib.WeightedSum(terms)


def default_metrics(num_classes, *, from_logits, ignore_label=None):
    """Pixel accuracy, mean IoU and Dice over the classes (2 for a binary model)."""
    classes = 2 if num_classes == 1 else num_classes
    common = dict(num_classes=classes, ignore_label=ignore_label, from_logits=from_logits)
    return [
        metrics_lib.PixelAccuracy(name="pixel_accuracy", **common),
        metrics_lib.MeanIoU(name="mean_iou", **common),
        metrics_lib.DiceScore(name="dice", **common),
    ]


def _learning_rate(learning_rate, schedule, total_steps):
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; got {schedule!r}.")
    if schedule == "constant":
        return learning_rate
    if total_steps is None:
        raise ValueError(
            f"`schedule={schedule!r}` needs the number of steps: pass `steps_per_epoch` or a "
            "dataset of known length."
        )
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    return keras.optimizers.schedules.PolynomialDecay(learning_rate, total_steps, power=0.9)


def _read_history(path):
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class _History(keras.callbacks.Callback):
    """`history.csv` rows, one per epoch; epochs run again after a resume replace theirs."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:  # first epoch of this process: drop rows from `epoch` on
            self.rows = [r for r in _read_history(self.path) if int(r["epoch"]) < epoch]
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        learning_rate = self.model.optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(learning_rate))
        self.rows.append(row)
        self._write()

    def _write(self):
        keys = list(dict.fromkeys(k for row in self.rows for k in row)) or ["epoch"]
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        temporary.replace(self.path)


class _Best(keras.callbacks.Callback):
    """Save the model at the best `monitor` value; best-so-far survives a resume."""

    def __init__(self, output_dir, monitor, mode):
        super().__init__()
        self.output_dir = output_dir
        self.monitor = monitor
        self.better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
        self.best = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.best is None:
            self.best = math.inf if self.better(0, 1) else -math.inf
            for row in _read_history(self.output_dir / "history.csv"):
                if int(row["epoch"]) < epoch and self.monitor in row:
                    value = float(row[self.monitor])
                    if self.better(value, self.best):
                        self.best = value

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(
                f"`monitor` {self.monitor!r} is not among the logged values {sorted(logs)}; "
                "validation values need `validation_data`."
            )
        value = float(logs[self.monitor])
        if self.better(value, self.best):
            self.best = value
            self.model.save(self.output_dir / "best.keras")
            summary = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
            (self.output_dir / "best.json").write_text(json.dumps(summary, indent=2) + "\n")


def _strategy(strategy):
    if strategy is None:
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    raise ValueError(
        f"`strategy` must be None, 'mirrored' or a tf.distribute.Strategy; got {strategy!r}."
    )


def _dataset_steps(dataset):
    count = int(dataset.cardinality())
    return count if count > 0 else None


def train(
    model,
    train_data,
    *,
    output_dir,
    epochs,
    model_arguments=None,
    validation_data=None,
    loss="auto",
    metrics="auto",
    optimizer="adam",
    learning_rate=1e-3,
    schedule="constant",
    steps_per_epoch=None,
    validation_steps=None,
    monitor="val_loss",
    strategy=None,
    mixed_precision=None,
    ignore_label=None,
    seed=0,
    verbose="auto",
    run_config=None,
):
    """Train a segmentation model with checkpoints, resume and logs; see the module doc.

    Args:
        model: a registry name (built with `kerasseg.load(model, **model_arguments)`) or a
            callable returning an uncompiled `keras.Model` (called inside the strategy scope).
        train_data: a `tf.data.Dataset` of (images, masks) batches, e.g. from
            `kerasseg.data.segmentation_dataset` or `kerasseg.datasets`.
        output_dir: folder for checkpoints and logs; reusing it resumes the run.
        epochs: total number of epochs (a resumed run stops at the same total).
        model_arguments: keyword arguments of `kerasseg.load` for a registry name.
        validation_data: a dataset of (images, masks) batches, evaluated each epoch.
        loss: "auto" ("bce+dice" for one output channel, "ce+dice" otherwise), a spec for
            `loss_from_spec`, or a keras Loss.
        metrics: "auto" (`default_metrics`), a list of keras metrics, or None.
        optimizer: "adam", "adamw" or "sgd" (momentum 0.9), or a keras Optimizer.
        learning_rate: initial learning rate.
        schedule: "constant", "cosine" (decay to 0 over the run) or "poly" (power 0.9).
        steps_per_epoch: batches per epoch (needed for a repeated dataset).
        validation_steps: validation batches per epoch (None: the whole dataset).
        monitor: the logged value that picks `best.keras` ("val_loss": lower is better;
            names containing "loss" or "error" are minimised, others maximised).
        strategy: None, "mirrored" (`tf.distribute.MirroredStrategy` over the local
            devices) or a `tf.distribute.Strategy`.
        mixed_precision: None, "float32", "mixed_float16" or "mixed_bfloat16"; sets the
            global Keras dtype policy before the model is built.
        ignore_label: the mask value that losses and metrics skip.
        seed: seeds Python, NumPy and the backend (`keras.utils.set_random_seed`).
        verbose: passed to `fit`.
        run_config: a JSON-serialisable dict recorded in `run.json` (e.g. the command).

    Returns:
        A `TrainingRun`.
    """
    if not isinstance(train_data, tf.data.Dataset):
        raise TypeError(f"`train_data` must be a tf.data.Dataset; got {type(train_data).__name__}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive int; got {epochs!r}.")
    if mixed_precision not in PRECISION_POLICIES:
        raise ValueError(
            f"`mixed_precision` must be one of {PRECISION_POLICIES}; got {mixed_precision!r}."
        )
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if mixed_precision is not None:
        keras.mixed_precision.set_global_policy(mixed_precision)
    steps = steps_per_epoch or _dataset_steps(train_data)
    total_steps = None if steps is None else steps * epochs
    distribution = _strategy(strategy)
    with distribution.scope():
        if isinstance(model, str):
            from kerasseg.registry import load

            network = load(model, **(model_arguments or {}))
        elif callable(model):
            network = model()
        else:
            raise TypeError(f"`model` must be a registry name or a callable; got {model!r}.")
        num_classes = int(network.output_shape[-1])
        logits = output_is_logits(network)
        if loss == "auto":
            loss = "bce+dice" if num_classes == 1 else "ce+dice"
        loss = loss_from_spec(
            loss, num_classes=num_classes, from_logits=logits, ignore_label=ignore_label
        )
        if metrics == "auto":
            metrics = default_metrics(num_classes, from_logits=logits, ignore_label=ignore_label)
        rate = _learning_rate(learning_rate, schedule, total_steps)
        if isinstance(optimizer, str):
            if optimizer not in OPTIMIZERS:
                raise ValueError(
                    f"`optimizer` must be one of {sorted(OPTIMIZERS)}; got {optimizer!r}."
                )
            options = {"momentum": 0.9} if optimizer == "sgd" else {}
            optimizer = OPTIMIZERS[optimizer](learning_rate=rate, **options)
        network.compile(optimizer=optimizer, loss=loss, metrics=metrics or None)
    mode = "min" if ("loss" in monitor or "error" in monitor) else "max"
    config = {
        "model": model if isinstance(model, str) else getattr(model, "__name__", repr(model)),
        "model_arguments": model_arguments or {},
        "epochs": epochs,
        "steps_per_epoch": steps,
        "loss": keras.saving.serialize_keras_object(loss),
        "optimizer": keras.saving.serialize_keras_object(network.optimizer),
        "learning_rate": learning_rate,
        "schedule": schedule,
        "monitor": monitor,
        "strategy": type(distribution).__name__,
        "replicas": distribution.num_replicas_in_sync,
        "mixed_precision": keras.mixed_precision.global_policy().name,
        "seed": seed,
        "ignore_label": ignore_label,
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        **(run_config or {}),
    }
    (output_dir / "run.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    callbacks = [
        _History(output_dir / "history.csv"),
        _Best(output_dir, monitor, mode),
        keras.callbacks.TensorBoard(log_dir=str(output_dir / "tensorboard")),
        # Last, so that an epoch counts as done only once its logs and best model are saved.
        # double_checkpoint: a kill while the backup is written leaves the previous epoch's.
        keras.callbacks.BackupAndRestore(
            backup_dir=str(output_dir / "backup"), double_checkpoint=True
        ),
    ]
    network.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        validation_steps=validation_steps,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # datasets shuffle themselves (`segmentation_dataset(shuffle=True)`)
    )
    network.save(output_dir / "final.keras")
    return TrainingRun(
        model=network,
        history=_read_history(output_dir / "history.csv"),
        output_dir=output_dir,
        best_path=output_dir / "best.keras",
        final_path=output_dir / "final.keras",
    )
