"""What a training run shows while it runs: its curves and a few validation predictions.

`kerasseg.training.train` adds the two callbacks of this module to `fit`; at the end of
every epoch they write, in the run folder:

* `curves.png` (`CurvesWriter`): the loss and every metric of `history.csv`, one panel per
  quantity, training solid and validation dashed in the same colour. It is drawn from the
  whole file, so a resumed run shows the epochs of earlier processes too.
* `samples/epoch_NNN.png` (`SampleWriter`, epochs numbered from 1 as in `history.csv`): the
  first `SAMPLE_COUNT` validation images, chosen once when training starts, one row each:
  the image, its ground truth over it and the model's prediction over it. Semantic models
  are drawn in their classes' colours (`kerasseg.inference.overlay`); instance models (Mask
  R-CNN, validation data of `kerasseg.data.instance_dataset`) one colour and a contour per
  instance (`kerasseg.inference.instance_overlay`). `train` builds semantic models only;
  a Mask R-CNN trained with `model.fit` gets the same pictures from
  `sample_writer(model, validation_data, output_dir)[0]` in its callbacks.
* the same picture in TensorBoard: tag "samples" in `tensorboard/samples`, at the step of
  the epoch's scalars (Keras numbers them from 0, so epoch 1 is step 0).

Pictures are drawn with matplotlib's Agg canvas on a `matplotlib.figure.Figure` (not
`pyplot`), so a backend the user chose is left alone, and written atomically
(`kerasseg.files`).
"""

import csv
import math
import shlex

import keras
import numpy as np

from kerasseg import files
from kerasseg.inference import (
    display_image,
    instance_overlay,
    labels_from_probabilities,
    overlay,
    predict_instances,
    task_of,
)
from kerasseg.inference.semantic import probabilities

__all__ = [
    "CURVES_FILE",
    "SAMPLES_FOLDER",
    "SAMPLES_TAG",
    "SAMPLE_COUNT",
    "TENSORBOARD_FOLDER",
    "CurvesWriter",
    "SampleWriter",
    "curve_quantities",
    "draw_curves",
    "read_history",
    "sample_sheet",
    "sample_writer",
    "take_instance_samples",
    "take_samples",
    "tensorboard_command",
    "write_curves",
]

CURVES_FILE = "curves.png"
SAMPLES_FOLDER = "samples"
SAMPLES_TAG = "samples"
SAMPLE_COUNT = 4
TENSORBOARD_FOLDER = "tensorboard"
# Logged values that are settings rather than scores: not drawn as curves.
_NOT_CURVES = ("epoch", "learning_rate", "lr")
_TASKS = ("semantic", "instance")
_DPI = 100
_MIN_PANEL = 192  # narrower images are enlarged (whole pixels) so that the titles fit
_MAX_PANEL = 640  # wider ones are shown at every k-th pixel
_GAP = 4  # white pixels between panels and rows
_HEADER = 24  # pixels of the title band above the rows


def read_history(path):
    """The rows of a run's `history.csv`: "epoch" as an int, the logged values as floats.

    Returns:
        A list of dicts, one per epoch ([] when the file does not exist).
    """
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {key: int(value) if key == "epoch" else float(value) for key, value in row.items()}
        for row in rows
    ]


def tensorboard_command(output_dir):
    """The shell command that opens the TensorBoard logs of the run in `output_dir`."""
    return shlex.join(["tensorboard", "--logdir", str(output_dir / TENSORBOARD_FOLDER)])


# ----------------------------------------------------------------------------- curves


def curve_quantities(rows):
    """The quantities of `rows` drawn as curves: each logged name without its "val_" prefix,
    "loss" first and the others in the order logged, settings (the learning rate) left out."""
    names = dict.fromkeys(key for row in rows for key in row)
    quantities = {}
    for name in names:
        base = name[len("val_") :] if name.startswith("val_") else name
        if base not in _NOT_CURVES:
            quantities.setdefault(base, None)
    return sorted(quantities, key=lambda name: name != "loss")


def draw_curves(rows):
    """A figure of the training history `rows` (as `read_history` gives them).

    One panel per quantity of `curve_quantities`, titled with its name: the training values
    as a solid line and the validation values ("val_" + name) as a dashed line of the same
    colour, against the epoch. An epoch without a value leaves a gap.

    Returns:
        A `matplotlib.figure.Figure` with an Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    quantities = curve_quantities(rows) or ["loss"]
    columns = math.ceil(math.sqrt(len(quantities)))
    lines = math.ceil(len(quantities) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * lines), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    epochs = [row["epoch"] for row in rows]
    for index, name in enumerate(quantities):
        axes = figure.add_subplot(lines, columns, index + 1)
        colour = f"C{index % 10}"
        for key, style, label in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
            if any(key in row for row in rows):
                values = [row.get(key, math.nan) for row in rows]
                axes.plot(epochs, values, style, color=colour, marker="o", ms=3, label=label)
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    return figure


def write_curves(rows, path):
    """Draw `rows` with `draw_curves` and write the PNG to `path` atomically.

    Returns:
        The `matplotlib.figure.Figure` drawn.
    """
    figure = draw_curves(rows)
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return figure


class CurvesWriter(keras.callbacks.Callback):
    """Redraws `curves.png` from the whole `history.csv` at the end of every epoch.

    Place it after the callback that writes the epoch's row of `history.csv`.

    Args:
        history_path: the run's `history.csv`.
        curves_path: where the PNG goes.
    """

    def __init__(self, history_path, curves_path):
        super().__init__()
        self.history_path = history_path
        self.curves_path = curves_path

    def on_epoch_end(self, epoch, logs=None):
        write_curves(read_history(self.history_path), self.curves_path)


# ----------------------------------------------------------------------------- samples


def take_samples(dataset, count=SAMPLE_COUNT):
    """The first `count` (image, mask) pairs of a dataset of (images, masks, ...) batches.

    Returns:
        (list of float32 (H, W, C) images, list of int (H, W) masks), or (None, reason) when
        the dataset does not hold such batches or its masks are not whole numbers.
    """
    spec = getattr(dataset, "element_spec", None)
    shapes = [getattr(part, "shape", None) for part in spec[:2]] if isinstance(spec, tuple) else []
    if len(shapes) < 2 or None in shapes or shapes[0].rank != 4 or shapes[1].rank not in (3, 4):
        return None, "the validation data are not (images, masks) batches"
    images, masks = [], []
    for element in dataset:
        batch = keras.ops.convert_to_numpy(element[0]).astype(np.float32)
        truth = keras.ops.convert_to_numpy(element[1])
        for image, mask in zip(batch, truth, strict=True):
            mask = mask[..., 0] if mask.ndim == 3 else mask
            if not np.array_equal(mask, np.round(mask)):
                return None, "the validation masks hold values that are not class ids"
            images.append(image)
            masks.append(mask.astype(np.int64))
        if len(images) >= count:
            break
    if not images:
        return None, "the validation data are empty"
    return images[:count], masks[:count]


def _is_instance_spec(spec):
    """Whether `spec` is the element spec of `kerasseg.data.instance_dataset` batches."""
    if not (isinstance(spec, tuple) and len(spec) >= 2):
        return False
    inputs, targets = spec[:2]
    return (
        isinstance(inputs, dict)
        and isinstance(targets, dict)
        and {"images", "image_sizes"} <= set(inputs)
        and {"masks", "num_instances"} <= set(targets)
        and getattr(inputs["images"], "shape", None) is not None
        and inputs["images"].shape.rank == 4
        and targets["masks"].shape.rank == 4
    )


def _truth_map(masks, count, height, width):
    """int32 (height, width) ids 1..`count` painted from the first `count` (valid) rows of
    the padded (M, H, W) `masks`, later instances on top, cropped to the image."""
    truth = np.zeros((height, width), np.int32)
    for index in range(count):
        truth[masks[index, :height, :width] > 0] = index + 1
    return truth


def take_instance_samples(dataset, count=SAMPLE_COUNT):
    """The first `count` images of a dataset of Mask R-CNN batches and their instance maps.

    The batches are those of `kerasseg.data.instance_dataset`: ({"images": (B, H, W, 3),
    "image_sizes": (B, 2)}, {"masks": (B, M, H, W), "num_instances": (B,), ...}). Each image
    is cropped to its "image_sizes" (the batch pads it at the bottom and right) and the
    first "num_instances" rows of its masks (the others are padding) are painted as ids
    1..n, later rows on top of earlier ones where they overlap.

    Returns:
        (list of float32 (h, w, 3) images with the values as stored, list of int32 (h, w)
        instance maps), or (None, reason) when the dataset does not hold such batches.
    """
    if not _is_instance_spec(getattr(dataset, "element_spec", None)):
        return None, (
            "the validation data are not Mask R-CNN batches ({'images', 'image_sizes'}, "
            "{'masks', 'num_instances', ...}) of kerasseg.data.instance_dataset"
        )
    images, truths = [], []
    for inputs, targets, *_ in dataset:
        batch = keras.ops.convert_to_numpy(inputs["images"]).astype(np.float32)
        sizes = keras.ops.convert_to_numpy(inputs["image_sizes"])
        masks = keras.ops.convert_to_numpy(targets["masks"])
        counts = keras.ops.convert_to_numpy(targets["num_instances"])
        for image, (height, width), mask, number in zip(batch, sizes, masks, counts, strict=True):
            images.append(image[:height, :width])
            truths.append(_truth_map(mask, int(number), int(height), int(width)))
        if len(images) >= count:
            break
    if not images:
        return None, "the validation data are empty"
    return images[:count], truths[:count]


def _display(image):
    """(uint8 (H, W) or (H, W, 3) image, whether its values were stretched) for display.

    Values as stored (0..255, or more: `display_image` scales those down) are shown as
    they are; normalised values (negative, or all within 0..1) are stretched linearly from
    their minimum and maximum to 0..255.
    """
    if image.ndim == 3 and image.shape[-1] not in (1, 3):
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high > 1:
        return display_image(image), False
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.round((image - low) * scale).astype(np.uint8), True


def _resize(picture):
    """`picture` enlarged by whole pixels to at least `_MIN_PANEL` wide, or shown at every
    k-th pixel to at most `_MAX_PANEL` wide."""
    width = picture.shape[1]
    if width < _MIN_PANEL:
        factor = math.ceil(_MIN_PANEL / width)
        return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    step = math.ceil(width / _MAX_PANEL)
    return picture[::step, ::step]


def _class_painter(ignore_label, palette):
    """The panel painter of semantic models: `painter(shown, labels)` draws class ids over
    the uint8 image `shown` in the colours of `palette` (None: `overlay`'s generic colours);
    pixels of `ignore_label` (and negative ones, e.g. padding) stay uncoloured."""

    def paint(shown, labels):
        rgb = np.repeat(shown[..., None], 3, axis=-1) if shown.ndim == 2 else shown
        ignored = labels < 0 if ignore_label is None else (labels < 0) | (labels == ignore_label)
        picture = overlay(shown, np.where(ignored, 0, labels), palette=palette)
        picture[ignored] = rgb[ignored]
        return picture

    return paint


def _instance_painter(shown, labels):
    """The panel painter of instance models: one colour and a contour per instance id."""
    return instance_overlay(shown, labels)


def _strip(image, mask, predicted, paint):
    """One row of the sheet: image | ground truth over it | prediction over it, uint8 RGB,
    the two maps drawn by `paint(shown, labels)`."""
    shown, stretched = _display(image)
    rgb = np.repeat(shown[..., None], 3, axis=-1) if shown.ndim == 2 else shown
    panels = [_resize(p) for p in (rgb, paint(shown, mask), paint(shown, predicted))]
    gap = np.full((panels[0].shape[0], _GAP, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1), stretched


def _check_task(task, ignore_label, palette, name):
    if task not in _TASKS:
        raise ValueError(f"{name}: `task` must be one of {list(_TASKS)}; got {task!r}.")
    if task == "instance" and (ignore_label is not None or palette is not None):
        raise ValueError(
            f"{name}: `ignore_label` and `palette` are for semantic models (class ids); got "
            f"ignore_label={ignore_label!r}, palette={palette!r} with task='instance'. "
            "Leave them None: instances get one colour each."
        )


def sample_sheet(
    images, masks, predicted, *, epoch, ignore_label=None, palette=None, task="semantic"
):
    """A figure of sample predictions: one row per image (image | ground truth over it |
    prediction over it) below a band of column titles; each pixel of the rows is one pixel
    of the figure at its own dpi.

    Args:
        images: list of (H, W, C) images as the model takes them.
        masks: list of int (H, W) ground truths: class ids, or instance ids for
            ``task="instance"``.
        predicted: list of int (H, W) predictions, as `masks`.
        epoch: the epoch named in the title (from 1).
        ignore_label: the mask value shown uncoloured in the ground truth, or None.
        palette: the `kerasseg.palette.Palette` of the classes, or None for `overlay`'s
            generic colours.
        task: "semantic" (class ids drawn with `kerasseg.inference.overlay`) or "instance"
            (instance ids 0 = background, drawn with `kerasseg.inference.instance_overlay`:
            one colour and a contour each; `ignore_label` and `palette` must be None).

    Returns:
        A `matplotlib.figure.Figure` with an Agg canvas.

    Raises:
        ValueError: `task` is neither, or "instance" with an `ignore_label` or `palette`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check_task(task, ignore_label, palette, "sample_sheet")
    paint = _instance_painter if task == "instance" else _class_painter(ignore_label, palette)
    rows = zip(images, masks, predicted, strict=True)
    strips = [_strip(*row, paint) for row in rows]
    width = max(strip.shape[1] for strip, _ in strips)
    rows = []
    for strip, _ in strips:
        padded = np.full((strip.shape[0], width, 3), 255, np.uint8)
        padded[:, : strip.shape[1]] = strip
        rows += [padded, np.full((_GAP, width, 3), 255, np.uint8)]
    grid = np.concatenate(rows[:-1])
    height = grid.shape[0] + _HEADER
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    figure.figimage(grid, xo=0, yo=0, origin="upper")
    panel = (strips[0][0].shape[1] - 2 * _GAP) / 3
    stretched = any(s for _, s in strips)
    titles = (
        "image (values stretched)" if stretched else "image",
        "ground truth",
        f"prediction, epoch {epoch}",
    )
    for column, title in enumerate(titles):
        x = (column * (panel + _GAP) + panel / 2) / width
        figure.text(x, 1 - _HEADER / 2 / height, title, ha="center", va="center", fontsize=9)
    return figure


def _figure_pixels(figure):
    """The RGB uint8 pixels of a drawn figure, as its PNG holds them."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


class SampleWriter(keras.callbacks.Callback):
    """Predicts fixed validation images at the end of every epoch; writes the sheet of
    `sample_sheet` to `folder/epoch_NNN.png` and to TensorBoard (tag `SAMPLES_TAG`).

    Args:
        images, masks: the samples, as `take_samples` (semantic) or `take_instance_samples`
            (instance) gives them.
        folder: where the PNG files go.
        log_dir: the TensorBoard folder of the images, or None for none.
        ignore_label: the mask value shown uncoloured in the ground truth, or None.
        threshold: the probability above which a 1-channel model predicts class 1.
        palette: the `kerasseg.palette.Palette` of the classes, or None (generic colours).
        task: "semantic" (class ids of the model's probabilities) or "instance" (Mask R-CNN:
            the instance map of `kerasseg.inference.predict_instances`, its defaults).

    Raises:
        ValueError: `task` is neither, or "instance" with an `ignore_label` or `palette`.
    """

    def __init__(
        self,
        images,
        masks,
        folder,
        log_dir=None,
        ignore_label=None,
        threshold=0.5,
        palette=None,
        task="semantic",
    ):
        super().__init__()
        _check_task(task, ignore_label, palette, "SampleWriter")
        self.images, self.masks = images, masks
        self.folder, self.log_dir = folder, log_dir
        self.ignore_label, self.threshold = ignore_label, threshold
        self.palette, self.task = palette, task
        self.writer = None

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            # TensorFlow-only (tf.summary): loaded when a training run starts.
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def predict(self):
        """The model's class ids (or instance ids) of the samples, one image at a time
        (memory as for one)."""
        if self.task == "instance":
            return [predict_instances(self.model, image)[0] for image in self.images]
        labels = []
        for image in self.images:
            probs = probabilities(self.model, image[None])
            labels.append(labels_from_probabilities(probs, self.threshold)[0])
        return labels

    def on_epoch_end(self, epoch, logs=None):
        figure = sample_sheet(
            self.images,
            self.masks,
            self.predict(),
            epoch=epoch + 1,
            ignore_label=self.ignore_label,
            palette=self.palette,
            task=self.task,
        )
        with files.atomic_path(self.folder / f"epoch_{epoch + 1:03d}.png") as temporary:
            figure.savefig(temporary, format="png", dpi=_DPI)
        if self.writer is not None:
            import tensorflow as tf

            with self.writer.as_default():
                tf.summary.image(SAMPLES_TAG, _figure_pixels(figure)[None], step=epoch)
            self.writer.flush()


def sample_writer(
    model, dataset, output_dir, *, ignore_label=None, count=SAMPLE_COUNT, palette=None
):
    """(a `SampleWriter` for the first `count` images of `dataset`, None) or (None, why
    there are no sample pictures).

    An instance model (`kerasseg.inference.task_of(model) == "instance"`, Mask R-CNN) takes
    its samples with `take_instance_samples`; `ignore_label` and `palette` (class colours)
    must then be None.
    """
    if dataset is None:
        return None, "no validation data"
    task = task_of(model)
    take = take_instance_samples if task == "instance" else take_samples
    images, masks = take(dataset, count)
    if images is None:
        return None, masks
    writer = SampleWriter(
        images,
        masks,
        output_dir / SAMPLES_FOLDER,
        log_dir=output_dir / TENSORBOARD_FOLDER / SAMPLES_TAG,
        ignore_label=ignore_label,
        palette=palette,
        task=task,
    )
    return writer, None
