"""Training around `model.fit`: losses by name, schedules, checkpoints, resume, logs.

`train` builds the model (inside a `tf.distribute` strategy scope when one is asked for),
compiles it and runs `fit` in a run folder (`kerasseg.run_folder.RunFolder`) that only one
process uses at a time:

* `checkpoint/`: the weights and optimizer state at the end of the last completed epoch
  (`epoch-NNNN.weights.h5`, named by `state.json`). Running the same `train` call again
  resumes at the epoch after it; asking for more epochs continues a finished run; a call
  whose other arguments differ from `run.json` is refused before anything is written, and
  a finished run asked again changes nothing. (The input pipeline restarts its own epoch
  count, so augmentation draws of a resumed run differ from an uninterrupted one.)
* `history.csv`: one row per epoch, numbered from 1 as Keras prints them; rows of epochs
  that are run again after a resume are replaced, so each epoch appears once.
* `best.keras` and `best.json`: the model at the best `monitor` value (best-so-far is
  restored from `history.csv` after a resume), `final.keras` at the end, `run.json` with
  the configuration, and TensorBoard logs in `tensorboard/` (the command that opens them is
  printed when training starts).
* `curves.png`, redrawn from the whole `history.csv` after every epoch, and
  `samples/epoch_NNN.png`: the first validation images with their ground truth and the
  model's prediction after epoch NNN, also in TensorBoard (`kerasseg.training_views`).

Every file is written to a temporary name and renamed (`kerasseg.files`), so a kill at
any moment leaves the previous version readable. Mask values outside the model's classes
stop training with the values found (a compiled loss cannot raise, so it would skip them),
and a loss that becomes NaN or infinite stops it with the epoch and batch.

Multi-worker training with `model.fit` is broken upstream (keras-team/keras issue 20585);
`strategy="mirrored"` (one machine, several devices) works.
"""

import csv
import dataclasses
import io
import json
import math
import pathlib
import re
import sys

import keras
import tensorflow as tf

from kerasseg import files, registry
from kerasseg import losses as losses_lib
from kerasseg import metrics as metrics_lib
from kerasseg import training_views as views
from kerasseg.data import transforms
from kerasseg.data.decode import error_text
from kerasseg.datasets import DATASETS
from kerasseg.inference.colours import model_palette
from kerasseg.inference.semantic import output_is_logits
from kerasseg.ops.checks import check_int, check_number
from kerasseg.run_folder import RunFolder

__all__ = [
    "LOSS_NAMES",
    "OPTIMIZERS",
    "PRECISION_POLICIES",
    "SCHEDULES",
    "TrainingDiverged",
    "TrainingRun",
    "default_metrics",
    "loss_from_spec",
    "train",
]

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
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
}
PRECISION_POLICIES = (None, "float32", "mixed_float16", "mixed_bfloat16")
_TERM = re.compile(r"^(?:(?P<weight>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\*)?(?P<name>[a-z_]+)$")


@dataclasses.dataclass
class TrainingRun:
    """What `train` returns: the trained model, its epoch history and where it saved.

    `history` holds one dict per epoch: "epoch" (an int from 1) and the logged values as
    floats; `trained_epochs` counts the epochs this call ran (0 for a finished run asked
    again, whose `model` holds the weights of its last epoch).
    """

    model: keras.Model
    history: list
    output_dir: pathlib.Path
    best_path: pathlib.Path
    final_path: pathlib.Path
    trained_epochs: int = 0


def loss_from_spec(spec, *, num_classes, from_logits, ignore_label=None):
    """A loss from a spec such as "bce", "ce+dice" or "0.5*focal+dice".

    Args:
        spec: terms that are names of `LOSS_NAMES`, optionally weighted as `w*name`, joined
            by "+"; or a `keras.losses.Loss` instance, returned as is.
        num_classes: the model's output channels: 1 means a binary (sigmoid) model, more a
            multiclass (softmax) one.
        from_logits: whether the model outputs logits.
        ignore_label: the mask value the loss skips, or None.

    Returns:
        The loss; more than one term gives a `WeightedSum`.

    Raises:
        ValueError: `spec` is empty, not a string, or holds a term that cannot be read.
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
    """Pixel accuracy, mean IoU and Dice over the classes (2 for a binary model).

    Args:
        num_classes: the model's output channels (1 for a binary model).
        from_logits: whether the model outputs logits.
        ignore_label: the mask value the metrics skip, or None.

    Returns:
        A list of three Keras metrics named "pixel_accuracy", "mean_iou" and "dice".
    """
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


def _csv_text(rows):
    keys = list(dict.fromkeys(k for row in rows for k in row)) or ["epoch"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _float_logs(logs):
    return {key: float(keras.ops.convert_to_numpy(value)) for key, value in (logs or {}).items()}


class _History(keras.callbacks.Callback):
    """`history.csv` rows, one per epoch (numbered from 1); epochs run again after a resume
    replace theirs."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:  # first epoch of this process: keep the completed epochs only
            self.rows = [r for r in views.read_history(self.path) if r["epoch"] <= epoch]
            files.write_text(self.path, _csv_text(self.rows))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **_float_logs(logs)}
        learning_rate = self.model.optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(learning_rate))
        self.rows.append(row)
        files.write_text(self.path, _csv_text(self.rows))


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
            for row in views.read_history(self.output_dir / "history.csv"):
                if row["epoch"] <= epoch and self.monitor in row:
                    if self.better(row[self.monitor], self.best):
                        self.best = row[self.monitor]

    def on_epoch_end(self, epoch, logs=None):
        logs = _float_logs(logs)
        if self.monitor not in logs:
            raise KeyError(
                f"`monitor` {self.monitor!r} is not among the logged values {sorted(logs)}; "
                "validation values need `validation_data`."
            )
        if self.better(logs[self.monitor], self.best):
            self.best = logs[self.monitor]
            files.save_model(self.model, self.output_dir / "best.keras")
            files.write_json(self.output_dir / "best.json", {"epoch": epoch + 1, **logs})


class _Diverged(Exception):
    """Raised inside `fit` by `_StopOnNonFinite`; `train` turns it into `TrainingDiverged`."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which epoch and batch."""


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stop `fit` at once when the training loss (or an epoch's validation loss) is NaN or
    infinite, before the epoch's history row, best model or checkpoint can be written."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None:
            value = float(keras.ops.convert_to_numpy(loss))
            if not math.isfinite(value):
                raise _Diverged(
                    f"the training loss became {value} at epoch {self.epoch + 1} of "
                    f"{self.epochs}, batch {batch + 1}"
                )

    def on_epoch_end(self, epoch, logs=None):
        logged = _float_logs(logs).items()
        bad = {k: v for k, v in logged if "loss" in k and not math.isfinite(v)}
        if bad:
            raise _Diverged(
                f"{', '.join(f'{k} = {v}' for k, v in bad.items())} at the end of "
                f"epoch {epoch + 1} of {self.epochs}"
            )


class _Checkpoint(keras.callbacks.Callback):
    """Weights and optimizer state at each epoch end, for resuming: `epoch-NNNN.weights.h5`
    is written first, then `state.json` names it, then older files go; a kill at any point
    leaves `state.json` naming a complete file."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        files.save_weights(self.model, self.folder / name)
        files.write_json(self.folder / "state.json", {"epoch": epoch + 1, "weights": name})
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


def _completed_epochs(output_dir):
    """(epochs completed, weights file) of the run in `output_dir`; (0, None) for none."""
    state = pathlib.Path(output_dir) / "checkpoint" / "state.json"
    if not state.is_file():
        return 0, None
    try:
        data = json.loads(state.read_text())
        path = state.parent / data["weights"]
        epoch = int(data["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{state} is damaged ({error}); remove checkpoint/.") from None
    if not path.is_file():
        raise ValueError(f"{state} names {path.name}, which is missing; remove checkpoint/.")
    return epoch, path


def _say(message, verbose):
    if verbose != 0:
        print(f"kerasseg train: {message}", file=sys.stderr, flush=True)


def _label_check(dataset, num_classes, ignore_label, what):
    """`dataset` with `kerasseg.data.check_labels` on its masks; elements that are not
    (images, masks, ...) tuples of tensors pass unchecked."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) >= 2 and isinstance(spec[1], tf.TensorSpec)):
        return dataset
    if not (spec[1].dtype.is_integer or spec[1].dtype.is_floating):
        return dataset

    def check(images, masks, *rest):
        masks = transforms.check_labels(masks, num_classes, ignore_label, source=what)
        return (images, masks, *rest)

    return dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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


@dataclasses.dataclass(frozen=True)
class _Request:
    """The arguments of one `train` call but `output_dir` (see `train`), checked when made."""

    model: object
    train_data: tf.data.Dataset
    epochs: int
    model_arguments: dict | None
    validation_data: tf.data.Dataset | None
    loss: object
    metrics: object
    optimizer: object
    learning_rate: float
    schedule: str
    steps_per_epoch: int | None
    validation_steps: int | None
    monitor: str
    strategy: object
    mixed_precision: str | None
    ignore_label: int | None
    seed: int
    verbose: object
    run_config: dict | None

    def __post_init__(self):
        """Refuse arguments that are wrong in themselves, before the run folder is touched."""
        if not isinstance(self.train_data, tf.data.Dataset):
            raise TypeError(
                f"`train_data` must be a tf.data.Dataset; got {type(self.train_data).__name__}."
            )
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.steps_per_epoch, "steps_per_epoch", minimum=1, allow_none=True)
        check_int(self.validation_steps, "validation_steps", minimum=1, allow_none=True)
        check_number(self.learning_rate, "learning_rate", positive=True)
        check_int(self.seed, "seed")
        if self.mixed_precision not in PRECISION_POLICIES:
            raise ValueError(
                f"`mixed_precision` must be one of {PRECISION_POLICIES}; got "
                f"{self.mixed_precision!r}."
            )
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"`monitor` must be the name of a logged value; got {self.monitor!r}.")

    @property
    def model_name(self):
        """The registry name, or the name of the callable that builds the model."""
        if isinstance(self.model, str):
            return self.model
        return getattr(self.model, "__qualname__", type(self.model).__name__)


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
    request = _Request(
        model,
        train_data,
        epochs=epochs,
        model_arguments=model_arguments,
        validation_data=validation_data,
        loss=loss,
        metrics=metrics,
        optimizer=optimizer,
        learning_rate=learning_rate,
        schedule=schedule,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        monitor=monitor,
        strategy=strategy,
        mixed_precision=mixed_precision,
        ignore_label=ignore_label,
        seed=seed,
        verbose=verbose,
        run_config=run_config,
    )
    with RunFolder(output_dir) as folder:
        return _train_in_folder(folder, request)


def _build_and_compile(request, rate):
    """The model of `request`, compiled with its loss, metrics and optimizer; and the loss."""
    if isinstance(request.model, str):
        network = registry.load(request.model, **(request.model_arguments or {}))
    elif callable(request.model):
        network = request.model()
    else:
        raise TypeError(f"`model` must be a registry name or a callable; got {request.model!r}.")
    num_classes = int(network.output_shape[-1])
    logits = output_is_logits(network)
    ignore_label = request.ignore_label
    loss = request.loss
    if loss == "auto":
        loss = "bce+dice" if num_classes == 1 else "ce+dice"
    loss = loss_from_spec(
        loss, num_classes=num_classes, from_logits=logits, ignore_label=ignore_label
    )
    metrics = request.metrics
    if metrics == "auto":
        metrics = default_metrics(num_classes, from_logits=logits, ignore_label=ignore_label)
    optimizer = request.optimizer
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {sorted(OPTIMIZERS)}; got {optimizer!r}.")
        options = {"momentum": 0.9} if optimizer == "sgd" else {}
        optimizer = OPTIMIZERS[optimizer](learning_rate=rate, **options)
    network.compile(optimizer=optimizer, loss=loss, metrics=metrics or None)
    return network, loss


def _build(request):
    """Seed and dtype policy set, the model built and compiled in the strategy's scope.

    Returns:
        (network, its loss, the `tf.distribute.Strategy`, batches per epoch or None).
    """
    keras.utils.set_random_seed(request.seed)
    if request.mixed_precision is not None:
        keras.mixed_precision.set_global_policy(request.mixed_precision)
    steps = request.steps_per_epoch or _dataset_steps(request.train_data)
    total_steps = None if steps is None else steps * request.epochs
    distribution = _strategy(request.strategy)
    with distribution.scope():
        rate = _learning_rate(request.learning_rate, request.schedule, total_steps)
        network, loss = _build_and_compile(request, rate)
    return network, loss, distribution, steps


def _without_names(config):
    """A serialised Keras object without its "name" entries, which Keras numbers per
    process ("adam_3"), so that the same arguments give the same `run.json`."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, list | tuple):
        return [_without_names(v) for v in config]
    return config


def _optimizer_config(optimizer):
    """The optimizer's configuration without its learning rate, which `run.json` records as
    `learning_rate` and `schedule` (a schedule's length follows the epoch count)."""
    config = _without_names(keras.saving.serialize_keras_object(optimizer))
    config.get("config", {}).pop("learning_rate", None)
    return config


def _run_json(request, network, loss, distribution, steps):
    """The configuration `run.json` records, which a resume must repeat."""
    return {
        "model": request.model_name,
        "model_arguments": request.model_arguments or {},
        "epochs": request.epochs,
        "steps_per_epoch": steps,
        "loss": _without_names(keras.saving.serialize_keras_object(loss)),
        "optimizer": _optimizer_config(network.optimizer),
        "learning_rate": request.learning_rate,
        "schedule": request.schedule,
        "monitor": request.monitor,
        "strategy": type(distribution).__name__,
        "replicas": distribution.num_replicas_in_sync,
        "mixed_precision": keras.mixed_precision.global_policy().name,
        "seed": request.seed,
        "ignore_label": request.ignore_label,
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        **(request.run_config or {}),
    }


def _result(network, output_dir, trained_epochs):
    return TrainingRun(
        model=network,
        history=views.read_history(output_dir / "history.csv"),
        output_dir=output_dir,
        best_path=output_dir / "best.keras",
        final_path=output_dir / "final.keras",
        trained_epochs=trained_epochs,
    )


def _train_in_folder(folder, request):
    """Build the model, resume it from the folder's checkpoint, fit it and save it."""
    output_dir = folder.path
    network, loss, distribution, steps = _build(request)
    config = _run_json(request, network, loss, distribution, steps)
    earlier = folder.check_same_run(config)
    done, checkpoint = _completed_epochs(output_dir) if earlier is not None else (0, None)
    if checkpoint is not None:
        with distribution.scope():
            network.optimizer.build(network.trainable_variables)
            network.load_weights(checkpoint)
    final_path = output_dir / "final.keras"
    if done >= request.epochs and final_path.is_file():
        _say(
            f"the run in {output_dir} is complete ({done} epochs; asked for {request.epochs}); "
            "nothing to do. Ask for more epochs to continue it.",
            request.verbose,
        )
        return _result(network, output_dir, 0)
    if checkpoint is not None:
        _say(f"resuming at epoch {done + 1} of {request.epochs} in {output_dir}", request.verbose)
    folder.write_config(config)
    _say(f"to watch it: {views.tensorboard_command(output_dir)}", request.verbose)
    _fit(request, network, output_dir, done)
    files.save_model(network, final_path)
    return _result(network, output_dir, max(request.epochs - done, 0))


def _callbacks(request, output_dir, samples):
    mode = "min" if ("loss" in request.monitor or "error" in request.monitor) else "max"
    return [
        _StopOnNonFinite(request.epochs),  # first: nothing is saved of an epoch that diverged
        _History(output_dir / "history.csv"),
        # After `_History`: draws the whole history.csv, this epoch's row included.
        views.CurvesWriter(output_dir / "history.csv", output_dir / views.CURVES_FILE),
        *([samples] if samples is not None else []),
        _Best(output_dir, request.monitor, mode),
        keras.callbacks.TensorBoard(log_dir=str(output_dir / views.TENSORBOARD_FOLDER)),
        # Last, so that an epoch counts as done only once its logs and best model are saved.
        _Checkpoint(output_dir / "checkpoint"),
    ]


def _run_palette(request, network):
    """The colours of the run's classes: those of the data set its run configuration names
    (`kerasseg train --dataset`), else of the registry model it trains, else generic
    (`kerasseg.inference.colours.model_palette`)."""
    channels = int(network.output_shape[-1])
    num_classes = 2 if channels == 1 else channels
    dataset = ((request.run_config or {}).get("cli") or {}).get("dataset")
    if dataset in DATASETS:
        return model_palette(dataset, num_classes)
    return model_palette(request.model if isinstance(request.model, str) else network, num_classes)


def _sample_writer(request, network, output_dir):
    """The `SampleWriter` of the run, or None after saying why there is none."""
    writer, reason = views.sample_writer(
        network,
        request.validation_data,
        output_dir,
        ignore_label=request.ignore_label,
        palette=_run_palette(request, network),
    )
    if writer is None:
        _say(f"no sample pictures: {reason}.", request.verbose)
    return writer


def _fit(request, network, output_dir, done):
    """`network.fit` from epoch `done` on, with the mask values of every batch checked.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        ValueError: a batch holds mask values outside the model's classes.
    """
    channels = int(network.output_shape[-1])
    num_classes = 2 if channels == 1 else channels
    ignore_label = request.ignore_label
    train_data = _label_check(request.train_data, num_classes, ignore_label, "a training batch")
    validation_data = request.validation_data
    if validation_data is not None:
        validation_data = _label_check(
            validation_data, num_classes, ignore_label, "a validation batch"
        )
    try:
        samples = _sample_writer(request, network, output_dir)  # reads validation images
        network.fit(
            train_data,
            epochs=request.epochs,
            initial_epoch=min(done, request.epochs),
            steps_per_epoch=request.steps_per_epoch,
            validation_data=validation_data,
            validation_steps=request.validation_steps,
            callbacks=_callbacks(request, output_dir, samples),
            verbose=request.verbose,
            shuffle=False,  # datasets shuffle themselves (`segmentation_dataset(shuffle=True)`)
        )
    except _Diverged as error:
        best = output_dir / "best.json"
        kept = (
            f"best.keras holds epoch {json.loads(best.read_text())['epoch']}"
            if best.is_file()
            else "no model was saved"
        )
        raise TrainingDiverged(
            f"{error}; training stopped and nothing of that epoch was saved ({kept}). Lower "
            "the learning rate (in a new output folder: this one keeps its run's arguments), "
            "or look for NaN or infinite values in the images."
        ) from None
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(error_text(error)) from error
