"""Segmentation losses as `keras.losses.Loss` subclasses (keras.ops only, any backend).

Conventions shared by every loss (and by `kerasseg.metrics`):

* ``mode="binary"``: `y_pred` (batch, H, W, 1) sigmoid probabilities (logits with
  ``from_logits=True``); `y_true` (batch, H, W) or (batch, H, W, 1) with values 0/1.
* ``mode="multiclass"``: `y_pred` (batch, H, W, C) softmax probabilities (or logits), C >= 2;
  `y_true` integer class ids 0..C-1, (batch, H, W) or (batch, H, W, 1). One-hot targets are
  refused (pass ``argmax`` of them).
* ``mode="multilabel"``: `y_pred` (batch, H, W, C) independent sigmoid probabilities (or
  logits); `y_true` (batch, H, W, C) with values 0/1.

Volumes (batch, D, H, W, C) work the same way (`y_true` (batch, D, H, W) or with a last axis
of 1). ``ignore_label`` (an int
or None): pixels of `y_true` equal to it contribute nothing (multilabel: per element). It may
be any int, also >= C (e.g. 255): no one-hot is ever taken of it. Labels outside 0..C-1 other
than ``ignore_label`` raise a ValueError in eager calls; inside a traced (compiled) call they
cannot raise and are excluded like ``ignore_label``. Everything is computed in float32 (inputs
of any float dtype, so mixed precision models are fine).

Per-pixel losses (`CrossEntropyLoss`, `FocalLoss`) average over the non-ignored pixels as
Keras' own ``SparseCategoricalCrossentropy(ignore_class=...)`` does: the ``reduction``
argument works as in Keras (``"sum_over_batch_size"``: mean over valid pixels; ``"sum"``;
``None``: the per-pixel map with zeros at ignored pixels). Region losses (`DiceLoss`,
`JaccardLoss`, `TverskyLoss`, `FocalTverskyLoss`, `LovaszLoss`) pool the whole batch per class
(one scalar) unless ``per_image=True`` (one value per image, then reduced over the batch).
``sample_weight`` of shape (batch,), (batch, H, W) or (batch, H, W, 1) weights the pixel terms
(region losses: inside the sums).

The formulas of `DiceLoss`, `JaccardLoss`, `TverskyLoss` and `FocalLoss` (binary) follow
segmentation_models.pytorch (smp) 0.3: classes without any true pixel in the pooled region
contribute a loss of 0 and still count in the mean over classes. Unlike smp, ``from_logits``
defaults to False (Keras' convention).
"""

import math

import keras
from keras import ops

from kerasseg.config import ConfigFromAttributes
from kerasseg.ops.checks import is_int, is_number
from kerasseg.ops.image import is_symbolic

__all__ = [
    "EPSILON",
    "MODES",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "JaccardLoss",
    "LovaszLoss",
    "TverskyLoss",
    "WeightedSum",
    "broadcast_weights",
    "check_classes",
    "check_ignore_label",
    "check_label_values",
    "check_labels",
    "check_mode",
    "check_real",
    "check_same_size",
    "check_segmentation_inputs",
    "lovasz_extension",
    "lovasz_gradient",
    "prepare_targets",
    "split_sample_weight",
]

MODES = ("binary", "multiclass", "multilabel")
EPSILON = 1e-7
_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


# ----------------------------------------------------------------------------- argument checks


def check_mode(mode, owner, modes=MODES):
    """Check that `mode` is one of `modes`.

    Args:
        mode: the value given.
        owner: the class or function that checks, for the message.
        modes: the accepted modes.

    Returns:
        `mode`.

    Raises:
        ValueError: any other value.
    """
    if mode not in modes:
        raise ValueError(f"{owner}: `mode` must be one of {modes}; got {mode!r}.")
    return mode


def check_ignore_label(ignore_label, owner):
    """Check an ignore label: any integer (also >= the number of classes) or None.

    Args:
        ignore_label: the value given.
        owner: the class or function that checks, for the message.

    Returns:
        `int(ignore_label)`, or None.

    Raises:
        TypeError: anything else.
    """
    if ignore_label is None:
        return None
    if not is_int(ignore_label):
        raise TypeError(f"{owner}: `ignore_label` must be an int or None; got {ignore_label!r}.")
    return int(ignore_label)


def check_real(value, name, owner, low=None, high=None, low_open=False):
    """Check that `value` is a finite real number within bounds.

    Args:
        value: the value given.
        name: the argument's name, for the message.
        owner: the class or function that checks, for the message.
        low: the smallest accepted value, or None.
        high: the largest accepted value (inclusive), or None.
        low_open: refuse `low` itself (accept values > `low` only).

    Returns:
        `float(value)`.

    Raises:
        TypeError: `value` is not a finite number.
        ValueError: `value` is out of bounds (the message names the bound it breaks).
    """
    if not is_number(value) or not math.isfinite(value):
        raise TypeError(f"{owner}: `{name}` must be a finite number; got {value!r}.")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = ">" if low_open else ">="
        raise ValueError(f"{owner}: `{name}` must be {bound} {low}; got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"{owner}: `{name}` must be <= {high}; got {value!r}.")
    return value


def check_classes(classes, owner, extra=()):
    """Check a selection of classes.

    Args:
        classes: the value given.
        owner: the class or function that checks, for the message.
        extra: strings accepted besides a list (e.g. "present", "all").

    Returns:
        None, the string from `extra`, or the class ids as a list of ints.

    Raises:
        TypeError: `classes` is not iterable.
        ValueError: a string outside `extra`, an empty list, a class id that is not an
            integer >= 0, or a repeated class.
    """
    if classes is None or (isinstance(classes, str) and classes in extra):
        return classes
    accepted = "None, " + (", ".join(repr(e) for e in extra) + " or " if extra else "")
    if isinstance(classes, str | bytes):
        raise ValueError(
            f"{owner}: `classes` must be {accepted}a list of class ids; got {classes!r}."
        )
    if not hasattr(classes, "__iter__"):
        raise TypeError(
            f"{owner}: `classes` must be {accepted}a list of class ids; got {classes!r}."
        )
    values = list(classes)
    if not values or any(not is_int(c) or c < 0 for c in values):
        raise ValueError(
            f"{owner}: `classes` must be {accepted}a non-empty list of class ids "
            f">= 0; got {classes!r}."
        )
    if len(set(values)) != len(values):
        raise ValueError(f"{owner}: `classes` must not repeat a class; got {classes!r}.")
    return [int(c) for c in values]


def _check_class_ids(classes, channels, owner):
    """Refuse a list of `classes` that names a channel `y_pred` does not have."""
    if isinstance(classes, list) and max(classes) >= channels:
        raise ValueError(
            f"{owner}: `classes` must be ids < {channels} (the channels of `y_pred`); got "
            f"{classes}."
        )


# ----------------------------------------------------------------------------- inputs


def check_same_size(true_dims, pred_dims, owner, shapes):
    """Refuse label and prediction maps whose known batch or spatial sizes differ.

    Args:
        true_dims: the (batch, *spatial) sizes of `y_true`, None where unknown.
        pred_dims: the same of `y_pred`.
        owner: the class or function that checks, for the message.
        shapes: the full shapes of `y_true` and `y_pred`, for the message.

    Raises:
        ValueError: different ranks, or a size known on both sides that differs.
    """
    conflict = len(true_dims) != len(pred_dims) or any(
        a is not None and b is not None and a != b
        for a, b in zip(true_dims, pred_dims, strict=False)
    )
    if conflict:
        raise ValueError(
            f"{owner}: `y_true` and `y_pred` must agree in batch and spatial size; got "
            f"shapes {shapes[0]} and {shapes[1]}."
        )


def _check_channels(mode, channels, pred_shape, owner):
    """Refuse a `y_pred` channel count that does not suit `mode`."""
    if channels is None:
        raise ValueError(
            f"{owner}: the channel axis of `y_pred` must be known; got shape {pred_shape}."
        )
    if mode == "binary" and channels != 1:
        raise ValueError(
            f"{owner}: mode='binary' expects `y_pred` with 1 channel (the sigmoid probability "
            f"of the positive class); got shape {pred_shape}. Use mode='multiclass' for "
            f"softmax outputs or mode='multilabel' for several sigmoid channels."
        )
    if mode == "multiclass" and channels < 2:
        raise ValueError(
            f"{owner}: mode='multiclass' expects `y_pred` with C >= 2 softmax channels; got "
            f"shape {pred_shape}. Use mode='binary' for a single sigmoid channel."
        )


def _true_spatial(true_shape, pred_shape, mode, owner):
    """The spatial sizes of `y_true` after checking its layout for `mode`."""
    rank, channels = len(pred_shape), pred_shape[-1]
    if mode == "multilabel":
        if len(true_shape) != rank or true_shape[-1] != channels:
            raise ValueError(
                f"{owner}: mode='multilabel' expects `y_true` of shape (batch, height, width, "
                f"{channels}) (one 0/1 channel per class of `y_pred`); got shape {true_shape} "
                f"for `y_pred` of shape {pred_shape}."
            )
        return true_shape[1:-1]
    if len(true_shape) == rank and true_shape[-1] == 1:
        return true_shape[1:-1]
    if len(true_shape) == rank - 1:
        return true_shape[1:]
    if len(true_shape) == rank and true_shape[-1] == channels:
        raise ValueError(
            f"{owner}: mode={mode!r} expects `y_true` as integer class ids of shape "
            f"(batch, height, width) or (batch, height, width, 1); got shape {true_shape}, "
            f"which looks one-hot. Pass `argmax(y_true, axis=-1)` instead, or use "
            f"mode='multilabel' for independent 0/1 channels."
        )
    raise ValueError(
        f"{owner}: mode={mode!r} expects `y_true` of shape (batch, height, width) or "
        f"(batch, height, width, 1) for `y_pred` of shape {pred_shape}; got shape "
        f"{true_shape}."
    )


def check_segmentation_inputs(y_true, y_pred, mode, owner):
    """Validate the shapes of `y_true` and `y_pred` for `mode`.

    Args:
        y_true: (batch, *spatial) or (batch, *spatial, 1) class ids for binary/multiclass,
            (batch, *spatial, C) 0/1 values for multilabel.
        y_pred: (batch, *spatial, C) probabilities or logits.
        mode: "binary", "multiclass" or "multilabel".
        owner: the class or function that checks, for the messages.

    Returns:
        The number of channels C of `y_pred`.

    Raises:
        ValueError: shapes that do not suit `mode` or do not agree.
    """
    pred_shape = tuple(y_pred.shape)
    true_shape = tuple(y_true.shape)
    if len(pred_shape) < 4:
        raise ValueError(
            f"{owner}: `y_pred` must have shape (batch, height, width, channels) (or (batch, "
            f"depth, height, width, channels)); got shape {pred_shape}."
        )
    _check_channels(mode, pred_shape[-1], pred_shape, owner)
    spatial_true = _true_spatial(true_shape, pred_shape, mode, owner)
    check_same_size(
        (true_shape[0],) + spatial_true,
        (pred_shape[0],) + pred_shape[1:-1],
        owner,
        (true_shape, pred_shape),
    )
    return pred_shape[-1]


def check_labels(
    labels, is_bad, accepted, owner, what="`y_true`", ignore_label=None, shown_as=float
):
    """Eager-only: refuse label values for which `is_bad` holds, other than `ignore_label`.

    Traced calls are skipped (they cannot raise on values).

    Args:
        labels: a tensor of labels.
        is_bad: a function from a NumPy array of values to a boolean array.
        accepted: what is accepted, in words, for the message.
        owner: the class or function that checks, for the message.
        what: the argument, for the message.
        ignore_label: a value never refused, or None.
        shown_as: how the message shows the values (`float` or `int`).

    Raises:
        ValueError: a refused value, with up to 5 of them in the message.
    """
    if is_symbolic(labels):
        return
    values = ops.convert_to_numpy(labels).reshape(-1)
    if ignore_label is not None:
        values = values[values != ignore_label]
    bad = is_bad(values)
    if bad.any():
        shown = sorted({shown_as(v) for v in values[bad][:1000]})[:5]
        extra = "" if ignore_label is None else f" (or ignore_label={ignore_label})"
        raise ValueError(f"{owner}: {what} must hold {accepted}{extra}; got {shown}.")


def check_label_values(labels, owner, num_classes, ignore_label, integer, what="`y_true`"):
    """Eager-only: refuse targets outside 0..num_classes-1 (or [0, 1]).

    Args:
        labels: a tensor of targets.
        owner: the class or function that checks, for the message.
        num_classes: the number of classes C.
        ignore_label: a value never refused, or None.
        integer: accept the integers 0..C-1 (True) or the values in [0, 1] (False).
        what: the argument, for the message.

    Raises:
        ValueError: in eager calls, a refused value.
    """
    if integer:

        def is_bad(values):
            return (values < 0) | (values > num_classes - 1) | (values != values.round())

        accepted = f"integers 0..{num_classes - 1}"
    else:

        def is_bad(values):
            return (values < 0) | (values > 1)

        accepted = "values in [0, 1]"
    check_labels(labels, is_bad, accepted, owner, what, ignore_label)


def prepare_targets(y_true, y_pred, mode, ignore_label, owner):
    """One-hot / 0-1 float32 targets and their validity, both shaped like `y_pred`'s pixels.

    Args:
        y_true: the targets (see `check_segmentation_inputs`).
        y_pred: the predictions, (batch, *spatial, C).
        mode: "binary", "multiclass" or "multilabel".
        ignore_label: the label to leave out, or None.
        owner: the class or function that checks, for the messages.

    Returns:
        A tuple (target, valid, channels): target (batch, *spatial, C) float32, valid
        (batch, *spatial, 1) float32 (binary/multiclass) or (batch, *spatial, C)
        (multilabel), channels C.

    Raises:
        ValueError: shapes or (in eager calls) target values that do not suit `mode`.
    """
    channels = check_segmentation_inputs(y_true, y_pred, mode, owner)
    rank = len(y_pred.shape)
    if mode != "multilabel" and len(y_true.shape) == rank:
        y_true = ops.squeeze(y_true, axis=-1)
    if mode == "multiclass":
        check_label_values(y_true, owner, channels, ignore_label, integer=True)
        labels = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
        valid = ops.logical_and(labels >= 0, labels < channels)
        if ignore_label is not None:
            valid = ops.logical_and(valid, ops.not_equal(labels, ignore_label))
        safe = ops.where(valid, labels, 0)
        valid = ops.expand_dims(ops.cast(valid, "float32"), -1)
        target = ops.one_hot(safe, channels, dtype="float32") * valid
        return target, valid, channels
    check_label_values(y_true, owner, 2, ignore_label, integer=False)
    target = ops.cast(y_true, "float32")
    if mode == "binary":
        target = ops.expand_dims(target, -1)
    valid = ops.logical_and(target >= 0.0, target <= 1.0)
    if ignore_label is not None:
        valid = ops.logical_and(valid, ops.not_equal(target, float(ignore_label)))
    target = ops.where(valid, target, 0.0)
    return target, ops.cast(valid, "float32"), channels


def broadcast_weights(sample_weight, like, owner):
    """Sample weights as float32, with trailing unit axes so that they broadcast to `like`.

    Args:
        sample_weight: None, or weights of shape (batch,), (batch, *spatial) or
            (batch, *spatial, 1).
        like: the (batch, *spatial, K) tensor they must broadcast against.
        owner: the class or function that checks, for the message.

    Returns:
        The weights, of the rank of `like`, or None.

    Raises:
        ValueError: weights of rank 0 or of a higher rank than `like`.
    """
    if sample_weight is None:
        return None
    weight = ops.cast(sample_weight, "float32")
    rank = len(like.shape)
    shape = tuple(weight.shape)
    if len(shape) == 0 or len(shape) > rank:
        raise ValueError(
            f"{owner}: `sample_weight` must have shape (batch,), (batch, height, width) or "
            f"(batch, height, width, 1); got shape {shape}."
        )
    while len(weight.shape) < rank:
        weight = ops.expand_dims(weight, -1)
    return weight


def _pixel_weight(valid, sample_weight, owner):
    """The weight of each pixel term: its validity times its sample weight."""
    sample_weight = broadcast_weights(sample_weight, valid, owner)
    return valid if sample_weight is None else valid * sample_weight


def split_sample_weight(y_true):
    """Unpack `y_true` and the sample weight that `_SegmentationLoss.__call__` packs with it.

    Args:
        y_true: the targets, or a (targets, sample_weight) pair.

    Returns:
        A tuple (targets, sample_weight or None).
    """
    if isinstance(y_true, tuple | list):
        return y_true[0], y_true[1]
    return y_true, None


def _log_probabilities(y_pred, mode, from_logits):
    """(log p, log(1 - p)) for binary/multilabel; (log p, None) for multiclass (log-softmax).

    Probabilities are clipped to [1e-7, 1 - 1e-7] first, as Keras' cross-entropies do."""
    y_pred = ops.cast(y_pred, "float32")
    if mode == "multiclass":
        if from_logits:
            return ops.log_softmax(y_pred, axis=-1), None
        return ops.log(ops.clip(y_pred, EPSILON, 1.0 - EPSILON)), None
    if from_logits:
        return ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
    clipped = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    return ops.log(clipped), ops.log(1.0 - clipped)


def _cross_entropy(target, y_pred, mode, from_logits):
    """Per-pixel cross-entropy: -log p_y (multiclass, keepdims), elementwise binary otherwise."""
    log_p, log_not_p = _log_probabilities(y_pred, mode, from_logits)
    if mode == "multiclass":
        return -ops.sum(target * log_p, axis=-1, keepdims=True)
    return -(target * log_p + (1.0 - target) * log_not_p)


def _probabilities(y_pred, mode, from_logits):
    """`y_pred` as float32 probabilities (softmax or sigmoid of logits)."""
    y_pred = ops.cast(y_pred, "float32")
    if not from_logits:
        return y_pred
    return ops.softmax(y_pred, axis=-1) if mode == "multiclass" else ops.sigmoid(y_pred)


# ----------------------------------------------------------------------------- base classes


class _SegmentationLoss(ConfigFromAttributes, keras.losses.Loss):
    """Base: checks the arguments all segmentation losses take, routes `sample_weight` into
    `call` (packed with y_true) and prepares the targets."""

    config_keys = ("mode", "from_logits", "ignore_label")

    def __init__(
        self,
        mode="multiclass",
        from_logits=False,
        ignore_label=None,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        owner = type(self).__name__
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{owner}: `reduction` must be one of {_REDUCTIONS}; got {reduction!r}."
            )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.mode = check_mode(mode, owner)
        self.from_logits = bool(from_logits)
        self.ignore_label = check_ignore_label(ignore_label, owner)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            y_true = (y_true, sample_weight)
        return super().__call__(y_true, y_pred)

    def _targets(self, y_true, y_pred):
        """The (target, valid, channels) of `prepare_targets`, and the sample weight."""
        y_true, sample_weight = split_sample_weight(y_true)
        owner = type(self).__name__
        target, valid, channels = prepare_targets(
            y_true, y_pred, self.mode, self.ignore_label, owner
        )
        return target, valid, channels, sample_weight

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self._dtype_policy.name
        return config


class _PixelLoss(_SegmentationLoss):
    """A loss that is a mean over non-ignored pixels (elements, for multilabel)."""

    def call(self, y_true, y_pred):
        target, valid, _, sample_weight = self._targets(y_true, y_pred)
        values = self.pixel_losses(target, y_pred)  # like `valid`
        weight = _pixel_weight(valid, sample_weight, type(self).__name__)
        values = ops.where(valid > 0, values, 0.0) * weight
        if self.mode != "multilabel":
            values, valid, weight = values[..., 0], valid[..., 0], weight[..., 0]
        # Keras divides "mean" reductions by the number of elements; rescale so that the
        # result is the mean over the valid ones (what a Keras mask does, public API only).
        total = ops.cast(ops.prod(ops.convert_to_tensor(ops.shape(values), "int32")), "float32")
        if self.reduction in ("sum_over_batch_size", "mean"):
            values = values * ops.divide_no_nan(total, ops.sum(valid))
        elif self.reduction == "mean_with_sample_weight":
            values = values * ops.divide_no_nan(total, ops.sum(weight))
        return values

    def pixel_losses(self, target, y_pred):
        raise NotImplementedError


class _RegionLoss(_SegmentationLoss):
    """Dice-type losses from soft true positives, predicted and true sums per class."""

    config_keys = (
        *_SegmentationLoss.config_keys,
        "classes",
        "smooth",
        "eps",
        "log_loss",
        "per_image",
    )

    def __init__(
        self,
        mode="multiclass",
        classes=None,
        from_logits=False,
        smooth=0.0,
        eps=EPSILON,
        log_loss=False,
        ignore_label=None,
        per_image=False,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_label=ignore_label,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        owner = type(self).__name__
        self.classes = check_classes(classes, owner)
        if self.classes is not None and self.mode == "binary":
            raise ValueError(
                f"{owner}: `classes` does not apply to mode='binary' (one "
                f"channel); got classes={classes!r}."
            )
        self.smooth = check_real(smooth, "smooth", owner, low=0.0)
        self.eps = check_real(eps, "eps", owner, low=0.0, low_open=True)
        self.log_loss = bool(log_loss)
        self.per_image = bool(per_image)

    def call(self, y_true, y_pred):
        owner = type(self).__name__
        target, valid, channels, sample_weight = self._targets(y_true, y_pred)
        _check_class_ids(self.classes, channels, owner)
        probs = _probabilities(y_pred, self.mode, self.from_logits)
        weight = _pixel_weight(valid, sample_weight, owner)
        batch = ops.shape(probs)[0]
        probs = ops.reshape(probs, (batch, -1, channels))
        target = ops.reshape(target, (batch, -1, channels))
        weight = ops.reshape(weight, (batch, -1, ops.shape(weight)[-1]))
        probs = ops.where(weight > 0, probs, 0.0)  # no NaN/inf from ignored pixels
        axes = 1 if self.per_image else (0, 1)
        tp = ops.sum(weight * probs * target, axis=axes)
        pred_sum = ops.sum(weight * probs, axis=axes)
        true_sum = ops.sum(weight * target, axis=axes)
        score = self.score(tp, pred_sum, true_sum)  # (C,) or (batch, C)
        losses = self.class_losses(score)
        losses = losses * ops.cast(true_sum > 0, "float32")  # smp: no true pixel -> 0
        if self.classes is not None:
            losses = ops.take(losses, self.classes, axis=-1)
        return ops.mean(losses, axis=-1)

    def score(self, tp, pred_sum, true_sum):
        raise NotImplementedError

    def class_losses(self, score):
        if self.log_loss:
            return -ops.log(ops.maximum(score, self.eps))
        return 1.0 - score


# ----------------------------------------------------------------------------- region losses


@keras.saving.register_keras_serializable(package="kerasseg")
class DiceLoss(_RegionLoss):
    """Soft Dice loss (Milletari, Navab and Ahmadi, "V-Net", 3DV 2016).

    Per class c, over the whole batch (per image with ``per_image=True``) and the
    non-ignored pixels: ``dice_c = (2 sum(p t) + smooth) / max(sum(p) + sum(t) + smooth, eps)``
    and ``loss_c = 1 - dice_c`` (``-log(max(dice_c, eps))`` with ``log_loss=True``), set to 0
    for a class without true pixels; the loss is the mean of ``loss_c`` over all classes (or
    over ``classes``), as segmentation_models.pytorch's ``DiceLoss``.

    Args:
        mode: "binary", "multiclass" or "multilabel" (see the module docstring).
        classes: None (all channels) or a list of class ids to average over.
        from_logits: `y_pred` holds logits (sigmoid/softmax applied here).
        smooth: added to numerator and denominator (0: smp's default).
        eps: lower bound of the denominator.
        log_loss: use ``-log(dice)`` instead of ``1 - dice``.
        ignore_label: label of `y_true` to leave out, or None.
        per_image: one loss per image (then reduced over the batch) instead of pooling.
    """

    def score(self, tp, pred_sum, true_sum):
        return (2.0 * tp + self.smooth) / ops.maximum(pred_sum + true_sum + self.smooth, self.eps)


@keras.saving.register_keras_serializable(package="kerasseg")
class JaccardLoss(_RegionLoss):
    """Soft Jaccard (IoU) loss (Rahman and Wang, "Optimizing intersection-over-union in deep
    neural networks for image segmentation", ISVC 2016).

    ``iou_c = (sum(p t) + smooth) / max(sum(p) + sum(t) - sum(p t) + smooth, eps)``, then as
    `DiceLoss` (smp's ``JaccardLoss``).

    Args:
        mode, classes, from_logits, smooth, eps, log_loss, ignore_label, per_image: as
            `DiceLoss`.
    """

    def score(self, tp, pred_sum, true_sum):
        union = pred_sum + true_sum - tp
        return (tp + self.smooth) / ops.maximum(union + self.smooth, self.eps)


@keras.saving.register_keras_serializable(package="kerasseg")
class TverskyLoss(_RegionLoss):
    """Tversky loss (Salehi, Erdogmus and Gholipour, MLMI 2017).

    ``T_c = (TP + smooth) / max(TP + alpha FP + beta FN + smooth, eps)`` with soft
    ``TP = sum(p t)``, ``FP = sum(p (1 - t))``, ``FN = sum((1 - p) t)``; ``loss_c = 1 - T_c``
    (0 for a class without true pixels), mean over classes. `alpha` weights false positives
    and `beta` false negatives (Salehi's and smp's order); alpha = beta = 0.5 is Dice, 1/1 is
    Jaccard.

    Args:
        alpha: weight of the false positives, >= 0.
        beta: weight of the false negatives, >= 0.
        mode, classes, from_logits, smooth, eps, log_loss, ignore_label, per_image: as
            `DiceLoss`.
    """

    config_keys = (*_RegionLoss.config_keys, "alpha", "beta")

    def __init__(
        self,
        mode="multiclass",
        alpha=0.5,
        beta=0.5,
        classes=None,
        from_logits=False,
        smooth=0.0,
        eps=EPSILON,
        log_loss=False,
        ignore_label=None,
        per_image=False,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(
            mode=mode,
            classes=classes,
            from_logits=from_logits,
            smooth=smooth,
            eps=eps,
            log_loss=log_loss,
            ignore_label=ignore_label,
            per_image=per_image,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        owner = type(self).__name__
        self.alpha = check_real(alpha, "alpha", owner, low=0.0)
        self.beta = check_real(beta, "beta", owner, low=0.0)

    def score(self, tp, pred_sum, true_sum):
        fp = pred_sum - tp
        fn = true_sum - tp
        denominator = tp + self.alpha * fp + self.beta * fn + self.smooth
        return (tp + self.smooth) / ops.maximum(denominator, self.eps)


@keras.saving.register_keras_serializable(package="kerasseg")
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham and Khan, ISBI 2019).

    ``loss = mean_c (1 - T_c) ** gamma`` with the Tversky index ``T_c`` of `TverskyLoss`
    (0 for a class without true pixels). The paper writes the exponent as 1/gamma' with
    gamma' = 4/3 and weights false negatives by 0.7: the defaults here are ``gamma=0.75``,
    ``alpha=0.3`` (false positives), ``beta=0.7`` (false negatives). The exponent is taken per
    class, as in the paper (smp applies it to the class mean instead). ``1 - T_c`` is clamped
    to >= `eps` before the power so that gradients stay finite at a perfect prediction.

    Args:
        alpha, beta: as `TverskyLoss` (defaults 0.3 and 0.7).
        gamma: the exponent, > 0.
        mode, classes, from_logits, smooth, eps, ignore_label, per_image: as `DiceLoss`.
    """

    # No `log_loss`: the exponent takes its place.
    config_keys = (*(key for key in TverskyLoss.config_keys if key != "log_loss"), "gamma")

    def __init__(
        self,
        mode="multiclass",
        alpha=0.3,
        beta=0.7,
        gamma=0.75,
        classes=None,
        from_logits=False,
        smooth=0.0,
        eps=EPSILON,
        ignore_label=None,
        per_image=False,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(
            mode=mode,
            alpha=alpha,
            beta=beta,
            classes=classes,
            from_logits=from_logits,
            smooth=smooth,
            eps=eps,
            log_loss=False,
            ignore_label=ignore_label,
            per_image=per_image,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        self.gamma = check_real(gamma, "gamma", type(self).__name__, low=0.0, low_open=True)

    def class_losses(self, score):
        return ops.power(ops.maximum(1.0 - score, self.eps), self.gamma)


# ----------------------------------------------------------------------------- pixel losses


@keras.saving.register_keras_serializable(package="kerasseg")
class CrossEntropyLoss(_PixelLoss):
    """Cross-entropy with an ignore label, for every mode.

    binary/multilabel: ``-(t log p + (1 - t) log(1 - p))`` per element (soft targets in
    [0, 1] allowed); multiclass: ``-log p_y``. Probabilities are clipped to [1e-7, 1 - 1e-7]
    (Keras' epsilon); with ``from_logits=True`` log-sigmoid / log-softmax are used. The mean is
    over non-ignored pixels (multilabel: elements), so multiclass equals
    ``keras.losses.SparseCategoricalCrossentropy(ignore_class=...)`` wherever that applies.

    Args:
        mode: "binary", "multiclass" or "multilabel".
        from_logits: `y_pred` holds logits.
        ignore_label: label of `y_true` to leave out, or None (any int, also >= C).
    """

    def pixel_losses(self, target, y_pred):
        return _cross_entropy(target, y_pred, self.mode, self.from_logits)


@keras.saving.register_keras_serializable(package="kerasseg")
class FocalLoss(_PixelLoss):
    """Focal loss (Lin, Goyal, Girshick, He and Dollar, "Focal loss for dense object
    detection", ICCV 2017).

    binary/multilabel, per element (smp's ``focal_loss_with_logits``): ``ce`` the binary
    cross-entropy, ``p_t = exp(-ce)``, ``loss = alpha_t (1 - p_t) ** gamma ce`` with
    ``alpha_t = alpha t + (1 - alpha)(1 - t)`` (no weighting when `alpha` is None).
    multiclass (categorical, softmax): ``loss = alpha_y (1 - p_y) ** gamma (-log p_y)`` with
    `alpha` None (1), a float (all classes) or a list of C per-class weights; with a float
    alpha this is ``keras.losses.CategoricalFocalCrossentropy``. Mean over non-ignored pixels
    (elements). Lin et al. use alpha = 0.25, gamma = 2 for detection; default here is no alpha.

    Args:
        mode: "binary", "multiclass" or "multilabel".
        alpha: None, a float in [0, 1] (binary/multilabel), a float > 0 or a list of C
            weights (multiclass).
        gamma: focusing parameter >= 0 (0: cross-entropy).
        from_logits: `y_pred` holds logits.
        ignore_label: label of `y_true` to leave out, or None.
    """

    config_keys = (*_SegmentationLoss.config_keys, "alpha", "gamma")

    def __init__(
        self,
        mode="multiclass",
        alpha=None,
        gamma=2.0,
        from_logits=False,
        ignore_label=None,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_label=ignore_label,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        owner = type(self).__name__
        self.gamma = check_real(gamma, "gamma", owner, low=0.0)
        self.alpha = _check_alpha(alpha, self.mode, owner)

    def pixel_losses(self, target, y_pred):
        owner = type(self).__name__
        ce = _cross_entropy(target, y_pred, self.mode, self.from_logits)
        if self.mode == "multiclass":
            if isinstance(self.alpha, list):
                if len(self.alpha) != target.shape[-1]:
                    raise ValueError(
                        f"{owner}: `alpha` must list one weight per class "
                        f"({target.shape[-1]}); got {len(self.alpha)}."
                    )
                alpha = ops.sum(
                    target * ops.convert_to_tensor(self.alpha, "float32"), axis=-1, keepdims=True
                )
            else:
                alpha = self.alpha
        else:
            alpha = None
            if self.alpha is not None:
                alpha = self.alpha * target + (1.0 - self.alpha) * (1.0 - target)
        p_t = ops.exp(-ce)
        # Clamp before the power: finite gradients where p_t rounds to 1 (also for gamma < 1).
        loss = ops.power(ops.maximum(1.0 - p_t, 1e-12), self.gamma) * ce
        if alpha is not None:
            loss = loss * alpha
        return loss


def _check_alpha(alpha, mode, owner):
    """FocalLoss' `alpha`: None, a float (in [0, 1] unless multiclass) or, for multiclass, a
    non-empty list of per-class weights >= 0."""
    if alpha is None:
        return None
    if is_number(alpha):
        high = None if mode == "multiclass" else 1.0
        return check_real(alpha, "alpha", owner, low=0.0, high=high)
    if mode == "multiclass" and hasattr(alpha, "__iter__") and not isinstance(alpha, str):
        weights = [check_real(a, "alpha", owner, low=0.0) for a in alpha]
        if not weights:
            raise ValueError(f"{owner}: `alpha` must not be an empty list.")
        return weights
    accepted = (
        "None, a float or a list of per-class floats"
        if mode == "multiclass"
        else "None or a float in [0, 1]"
    )
    raise TypeError(f"{owner}: `alpha` must be {accepted} for mode={mode!r}; got {alpha!r}.")


# ----------------------------------------------------------------------------- Lovasz


def lovasz_gradient(gt_sorted):
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. the sorted errors.

    Berman et al. 2018, Algorithm 1.

    Args:
        gt_sorted: (..., P) float 0/1 ground truth, sorted by decreasing error along the
            last axis.

    Returns:
        (..., P) float gradient.
    """
    gts = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(gt_sorted, axis=-1)
    union = gts + ops.cumsum(1.0 - gt_sorted, axis=-1)
    jaccard = 1.0 - intersection / union  # union >= 1 everywhere
    return ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)


def lovasz_extension(errors, fg, valid):
    """Lovasz extension of the Jaccard loss, per row.

    Invalid entries get error -1 and fg 0: sorted after every valid error >= 0 (and rectified
    to 0), they leave the gradient of the valid prefix unchanged, as if removed.

    Args:
        errors: (..., P) float errors.
        fg: (..., P) float 0/1 ground truth.
        valid: (..., P) float 0/1, the entries that count.

    Returns:
        (...,) float losses.
    """
    errors = ops.where(valid > 0, errors, -1.0)
    fg = fg * valid
    order = ops.argsort(-ops.stop_gradient(errors), axis=-1)
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    fg_sorted = ops.take_along_axis(fg, order, axis=-1)
    grad = ops.stop_gradient(lovasz_gradient(fg_sorted))
    return ops.sum(ops.relu(errors_sorted) * grad, axis=-1)


@keras.saving.register_keras_serializable(package="kerasseg")
class LovaszLoss(_SegmentationLoss):
    """Lovasz loss (Berman, Rannen Triki and Blaschko, "The Lovasz-Softmax loss", CVPR 2018).

    multiclass: Lovasz-softmax, per class the Lovasz extension of the Jaccard loss applied to
    the errors ``|[y = c] - p_c|`` of the softmax probabilities; the mean over the classes
    present in `y_true` (``classes="present"``, the paper's default), over all classes
    (``"all"``) or over a list of class ids. binary: Lovasz hinge on the logit ``s`` (from
    probabilities ``log(p / (1 - p))`` when ``from_logits=False``), errors ``1 - s (2 t - 1)``,
    rectified after sorting. multilabel: the hinge per channel, averaged over channels.
    Ignored pixels are left out. ``per_image=False`` pools all pixels of the batch into one
    Lovasz extension; ``per_image=True`` averages the per-image losses. `sample_weight` is only
    accepted with ``per_image=True`` and shape (batch,) (the Lovasz extension is not a sum
    over pixels).

    Args:
        mode: "binary", "multiclass" or "multilabel" (see the module docstring).
        classes: "present" (default; None is the same), "all" or a list of class ids to
            average over (multiclass).
        per_image: one loss per image (then reduced over the batch) instead of pooling.
        from_logits: `y_pred` holds logits.
        ignore_label: label of `y_true` to leave out, or None.
    """

    config_keys = (*_SegmentationLoss.config_keys, "classes", "per_image")

    def __init__(
        self,
        mode="multiclass",
        classes="present",
        per_image=False,
        from_logits=False,
        ignore_label=None,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
    ):
        super().__init__(
            mode=mode,
            from_logits=from_logits,
            ignore_label=ignore_label,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        self.classes = check_classes(classes, type(self).__name__, extra=("present", "all"))
        if self.classes is None:
            self.classes = "present"
        self.per_image = bool(per_image)

    def _errors(self, target, y_pred):
        """The errors the Lovasz extension sorts: |[y = c] - p_c| (multiclass) or the hinge
        `1 - s (2 t - 1)` of the logits `s` (binary/multilabel)."""
        y_pred = ops.cast(y_pred, "float32")
        if self.mode == "multiclass":
            return ops.abs(target - _probabilities(y_pred, self.mode, self.from_logits))
        if self.from_logits:
            logits = y_pred
        else:
            clipped = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
            logits = ops.log(clipped) - ops.log(1.0 - clipped)
        return 1.0 - logits * (2.0 * target - 1.0)

    def _mean_over_classes(self, losses, target):
        """(groups, C) per-class losses -> (groups,), over the classes `classes` selects;
        `target` is (groups, C, P)."""
        if self.mode != "multiclass" or self.classes == "all":
            return ops.mean(losses, axis=-1)
        if self.classes == "present":
            present = ops.cast(ops.sum(target, axis=-1) > 0, "float32")
            return ops.divide_no_nan(ops.sum(losses * present, axis=-1), ops.sum(present, axis=-1))
        return ops.mean(ops.take(losses, self.classes, axis=-1), axis=-1)

    def call(self, y_true, y_pred):
        owner = type(self).__name__
        target, valid, channels, sample_weight = self._targets(y_true, y_pred)
        _check_class_ids(self.classes, channels, owner)
        errors = self._errors(target, y_pred)
        valid = valid * ops.ones_like(errors)
        groups = ops.shape(errors)[0] if self.per_image else 1

        # (groups, C, P): one Lovasz extension per group and class
        def rows(x):
            return ops.transpose(ops.reshape(x, (groups, -1, channels)), (0, 2, 1))

        losses = lovasz_extension(rows(errors), rows(target), rows(valid))  # (groups, C)
        losses = self._mean_over_classes(losses, rows(target))
        if sample_weight is not None:
            if not self.per_image or len(sample_weight.shape) != 1:
                raise ValueError(
                    f"{owner}: `sample_weight` needs per_image=True and shape (batch,); got "
                    f"per_image={self.per_image} and shape {tuple(sample_weight.shape)}."
                )
            losses = losses * ops.cast(sample_weight, "float32")
        return losses if self.per_image else losses[0]


# ----------------------------------------------------------------------------- combinations


@keras.saving.register_keras_serializable(package="kerasseg")
class WeightedSum(keras.losses.Loss):
    """Weighted sum of losses: ``WeightedSum([(DiceLoss(), 1.0), (FocalLoss(), 0.5)])``.

    Each term is called with the same ``(y_true, y_pred, sample_weight)`` and reduces itself
    with its own `reduction` (use scalar reductions); the result is ``sum(weight * loss)``.
    Terms are Keras `Loss` instances (or their serialized dicts); nested sums serialize too.
    `CombinedLoss` is another name for this class.

    Args:
        terms: non-empty list of (loss, weight) pairs, weights finite numbers.
    """

    def __init__(self, terms, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        owner = type(self).__name__
        if isinstance(terms, dict) or not hasattr(terms, "__iter__"):
            raise TypeError(
                f"{owner}: `terms` must be a list of (loss, weight) pairs; got {terms!r}."
            )
        parsed = []
        for term in terms:
            if isinstance(term, dict) and set(term) == {"loss", "weight"}:
                term = (term["loss"], term["weight"])
            if not isinstance(term, tuple | list) or len(term) != 2:
                raise TypeError(f"{owner}: each term must be a (loss, weight) pair; got {term!r}.")
            loss, weight = term
            if isinstance(loss, dict):
                loss = keras.losses.deserialize(loss)
            if not isinstance(loss, keras.losses.Loss):
                raise TypeError(
                    f"{owner}: each loss must be a keras.losses.Loss instance (e.g. "
                    f"keras.losses.BinaryCrossentropy() or kerasseg.losses.DiceLoss()); got "
                    f"{loss!r}."
                )
            parsed.append((loss, check_real(weight, "weight", owner)))
        if not parsed:
            raise ValueError(f"{owner}: `terms` must not be empty.")
        self.terms = parsed

    def __call__(self, y_true, y_pred, sample_weight=None):
        total = None
        for loss, weight in self.terms:
            value = ops.cast(loss(y_true, y_pred, sample_weight=sample_weight), "float32")
            total = value * weight if total is None else total + value * weight
        return total

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self._dtype_policy.name
        config["terms"] = [[keras.losses.serialize(loss), weight] for loss, weight in self.terms]
        return config


CombinedLoss = WeightedSum
