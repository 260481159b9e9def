"""Segmentation metrics as stateful `keras.metrics.Metric`s, plus functional versions.

Everything is keras.ops (any backend; eager, `tf.function`, XLA and `model.fit`/`evaluate`).

Semantic segmentation, from a confusion matrix accumulated over batches
(`confusion_matrix`, rows = true class, columns = predicted class, as scikit-learn):

* `ConfusionMatrix`: the (C, C) matrix itself.
* `MeanIoU`: per class ``IoU_c = TP / (TP + FP + FN)``; the mean is over the classes that
  occur in `y_true` OR in `y_pred` (TP + FP + FN > 0) among all classes (or `classes`), which
  is ``sklearn.metrics.jaccard_score(average="macro")`` with its default labels and Keras'
  ``MeanIoU``. Classes that occur in neither are NaN in the per-class vector.
* `DiceScore`: per class ``F1_c = 2 TP / (2 TP + FP + FN)`` (Dice 1945, Sorensen 1948), macro
  mean with the same rule (``sklearn.metrics.f1_score(average="macro")``).
* `PixelAccuracy`: correctly labelled / counted pixels.

Inputs: `y_true` integer class ids (batch, H, W) or (batch, H, W, 1); `y_pred` probabilities
or logits (batch, H, W, C): argmax over C, or for C = 1 (binary, ``num_classes=2``) class 1
where ``p > threshold`` (``sigmoid(logit) > threshold`` with ``from_logits=True``); or integer
label maps like `y_true` with ``y_pred_is_labels=True`` (volumes: (batch, D, H, W, C)
probabilities, label maps with a last axis of 1). Pixels whose true label equals
``ignore_label`` (any int, also >= C) are not counted. Labels outside 0..C-1 (other than
``ignore_label``) raise a ValueError in eager calls and are not counted in traced calls.
``sample_weight``: (batch,), (batch, H, W) or (batch, H, W, 1) weights of the pixel counts.

Instance segmentation, the ISBI 2012 challenge metrics (Arganda-Carreras et al., "Crowdsourcing
the creation of image segmentation algorithms for connectomics", Front. Neuroanat. 9:142,
2015): `rand_scores` (functional, instance label images) and the metrics `VRand` and `VInfo`
that label the 4-connected components of binary (membrane / cell interior) maps in-graph
(`kerasseg.ops.labelling.label_components`, label equivalence in a `keras.ops.while_loop`)
and average the per-image scores, as the challenge averages per slice. See `rand_scores` for the
exact definitions.
"""

import math
import warnings

import keras
from keras import ops

from kerasseg.config import ConfigFromAttributes
from kerasseg.losses import (
    broadcast_weights,
    check_classes,
    check_ignore_label,
    check_labels,
    check_real,
    check_same_size,
)
from kerasseg.ops.checks import check_int, is_int
from kerasseg.ops.components import check_connectivity
from kerasseg.ops.labelling import label_components

__all__ = [
    "CONVENTIONS",
    "ConfusionMatrix",
    "DiceScore",
    "MeanIoU",
    "PixelAccuracy",
    "VInfo",
    "VRand",
    "confusion_matrix",
    "dice_per_class",
    "iou_per_class",
    "mean_over_present",
    "pixel_accuracy",
    "rand_scores",
]

CONVENTIONS = ("skimage", "isbi2012")


def _wide_float():
    """float64 where the backend has it (not JAX without x64), else float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = ops.cast(ops.zeros(()), "float64")
    return keras.backend.standardize_dtype(probe.dtype)


def _check_num_classes(num_classes, owner):
    """The number of classes, an integer >= 2 (ValueError otherwise)."""
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(
            f"{owner}: `num_classes` must be an int >= 2 (2 for binary); got {num_classes!r}."
        )
    return int(num_classes)


def _check_labels_in_range(labels, num_classes, ignore_label, owner, what):
    """Eager-only: refuse class ids outside 0..num_classes-1 other than `ignore_label`."""

    def is_bad(values):
        return (values < 0) | (values >= num_classes)

    accepted = f"class ids 0..{num_classes - 1}"
    check_labels(labels, is_bad, accepted, owner, what, ignore_label, shown_as=int)


def _label_map(x, owner, what):
    """(batch, H, W) or (batch, *spatial, 1) -> int32 (batch, *spatial)."""
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise ValueError(
            f"{owner}: {what} must have shape (batch, height, width) or (batch, "
            f"height, width, 1); got shape {shape}."
        )
    if len(shape) >= 4 and shape[-1] == 1:
        x = ops.squeeze(x, axis=-1)
    elif len(shape) >= 4:
        hint = (
            "one-hot? pass its argmax"
            if what == "`y_true`"
            else "probabilities? leave y_pred_is_labels=False"
        )
        raise ValueError(
            f"{owner}: {what} must hold integer ids of shape (batch, height, width) or (batch, "
            f"height, width, 1); got shape {shape} ({hint})."
        )
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16", "float32", "float64"):
        x = ops.round(x)
    return ops.cast(x, "int32")


def _predicted_labels(y_pred, num_classes, threshold, from_logits, owner):
    """Probabilities / logits (batch, *spatial, C) -> int32 class ids (batch, *spatial)."""
    shape = tuple(y_pred.shape)
    if len(shape) < 4:
        raise ValueError(
            f"{owner}: `y_pred` must have shape (batch, height, width, channels) of "
            f"probabilities (or pass y_pred_is_labels=True for label maps); got shape {shape}."
        )
    channels = shape[-1]
    if channels == 1:
        if num_classes != 2:
            raise ValueError(
                f"{owner}: a 1-channel `y_pred` is a binary probability map and needs "
                f"num_classes=2; got num_classes={num_classes}."
            )
        p = ops.cast(y_pred[..., 0], "float32")
        if from_logits:
            p = ops.sigmoid(p)
        return ops.cast(p > threshold, "int32")
    if channels != num_classes:
        raise ValueError(
            f"{owner}: `y_pred` must have num_classes={num_classes} channels (or 1 for binary "
            f"maps, or pass y_pred_is_labels=True for label maps); got shape {shape}."
        )
    return ops.cast(ops.argmax(y_pred, axis=-1), "int32")


def _pixel_weights(sample_weight, like, owner):
    """Sample weights broadcast to `like` (batch, *spatial), float32, or None."""
    if sample_weight is None:
        return None
    weight = ops.convert_to_tensor(sample_weight)
    shape = tuple(weight.shape)
    if len(shape) == len(like.shape) + 1 and shape[-1] == 1:
        weight = ops.squeeze(weight, axis=-1)
    return ops.broadcast_to(broadcast_weights(weight, like, owner), ops.shape(like))


# ----------------------------------------------------------------------------- functional core


def confusion_matrix(y_true, y_pred, num_classes, ignore_label=None, sample_weight=None):
    """Confusion matrix of two integer label maps of the same shape.

    Args:
        y_true: integer class ids (any rank).
        y_pred: integer class ids, the same shape.
        num_classes: C.
        ignore_label: pixels with this true label are not counted (None: all are).
        sample_weight: None or weights broadcastable to the label maps.

    Returns:
        float32 (C, C) tensor, ``cm[i, j]`` = (weighted) number of pixels of true class i
        predicted as class j (``sklearn.metrics.confusion_matrix(labels=range(C))``).

    Raises:
        ValueError: `num_classes` < 2, label maps of different shapes, or (in eager calls)
            labels outside 0..C-1 other than `ignore_label` (traced calls drop them).
    """
    owner = "confusion_matrix"
    num_classes = _check_num_classes(num_classes, owner)
    ignore_label = check_ignore_label(ignore_label, owner)
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"{owner}: `y_true` and `y_pred` must have the same shape; got "
            f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}."
        )
    _check_labels_in_range(y_true, num_classes, ignore_label, owner, "`y_true`")
    _check_labels_in_range(y_pred, num_classes, None, owner, "`y_pred`")
    t = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    p = ops.reshape(ops.cast(y_pred, "int32"), (-1,))
    valid = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_label is not None:
        valid = valid & ops.not_equal(t, ignore_label)
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        sample_weight = ops.broadcast_to(ops.cast(sample_weight, "float32"), ops.shape(y_true))
        weight = weight * ops.reshape(sample_weight, (-1,))
    index = ops.where(valid, t * num_classes + p, 0)
    counts = ops.segment_sum(weight, index, num_segments=num_classes * num_classes)
    return ops.reshape(counts, (num_classes, num_classes))


def _overlap_per_class(cm, weight):
    """Per-class ``weight TP / (weight TP + FP + FN)`` of a confusion matrix (1: IoU, 2: Dice),
    NaN where the class occurs in neither the true nor the predicted labels."""
    cm = ops.convert_to_tensor(cm)
    tp = ops.diagonal(cm)
    fp = ops.sum(cm, axis=0) - tp
    fn = ops.sum(cm, axis=1) - tp
    return _ratio(weight * tp, weight * tp + fp + fn, float("nan"))


def _ratio(numerator, denominator, otherwise):
    """`numerator / denominator` where the denominator is > 0, `otherwise` elsewhere."""
    positive = denominator > 0
    return ops.where(positive, numerator / ops.where(positive, denominator, 1), otherwise)


def iou_per_class(cm):
    """Per-class IoU ``TP / (TP + FP + FN)`` of a confusion matrix.

    Args:
        cm: a (C, C) confusion matrix (rows: true class, columns: predicted class).

    Returns:
        (C,) IoUs, NaN where the class occurs in neither the true nor the predicted labels.
    """
    return _overlap_per_class(cm, 1)


def dice_per_class(cm):
    """Per-class Dice / F1 ``2 TP / (2 TP + FP + FN)`` of a confusion matrix.

    Args:
        cm: as `iou_per_class`.

    Returns:
        (C,) scores, NaN where `iou_per_class` is NaN.
    """
    return _overlap_per_class(cm, 2)


def mean_over_present(scores, classes=None):
    """Mean of the non-NaN entries of `scores`.

    Args:
        scores: (..., C) per-class scores, NaN for absent classes.
        classes: None, or the class ids to average over.

    Returns:
        The mean over the last axis of the entries that are not NaN (0 if none is).
    """
    scores = ops.convert_to_tensor(scores)
    if classes is not None:
        scores = ops.take(scores, classes, axis=-1)
    present = ops.logical_not(ops.isnan(scores))
    total = ops.sum(ops.where(present, scores, 0), axis=-1)
    return ops.divide_no_nan(
        total, ops.cast(ops.sum(ops.cast(present, "int32"), axis=-1), scores.dtype)
    )


def pixel_accuracy(cm):
    """Correct / counted pixels of a confusion matrix.

    Args:
        cm: a (C, C) confusion matrix.

    Returns:
        The accuracy, a scalar (0 when nothing was counted).
    """
    cm = ops.convert_to_tensor(cm)
    return ops.divide_no_nan(ops.sum(ops.diagonal(cm)), ops.sum(cm))


# ----------------------------------------------------------------------------- metric classes


@keras.saving.register_keras_serializable(package="kerasseg")
class ConfusionMatrix(ConfigFromAttributes, keras.metrics.Metric):
    """Confusion matrix accumulated over batches; `result()` is the (C, C) float32 matrix
    (rows: true class, columns: predicted class).

    Counts are kept in float64 where the backend has it (exact up to 2**53 pixels).

    Args:
        num_classes: C (2 for binary maps).
        ignore_label: true label not counted, or None.
        y_pred_is_labels: `y_pred` is an integer label map instead of probabilities.
        threshold: for 1-channel probability maps, class 1 where p > threshold.
        from_logits: 1-channel `y_pred` holds logits (argmax is unaffected).
    """

    config_keys = ("num_classes", "ignore_label", "y_pred_is_labels", "threshold", "from_logits")

    def __init__(
        self,
        num_classes,
        ignore_label=None,
        y_pred_is_labels=False,
        threshold=0.5,
        from_logits=False,
        name=None,
        dtype=None,
    ):
        super().__init__(name=name or self.default_name, dtype=dtype)
        owner = type(self).__name__
        self.num_classes = _check_num_classes(num_classes, owner)
        self.ignore_label = check_ignore_label(ignore_label, owner)
        self.y_pred_is_labels = bool(y_pred_is_labels)
        self.threshold = check_real(threshold, "threshold", owner, low=0.0, high=1.0)
        self.from_logits = bool(from_logits)
        self.total_cm = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype=_wide_float(),
            name="total_confusion_matrix",
        )

    default_name = "confusion_matrix"

    def update_state(self, y_true, y_pred, sample_weight=None):
        owner = type(self).__name__
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        labels = _label_map(y_true, owner, "`y_true`")
        if self.y_pred_is_labels:
            predicted = _label_map(y_pred, owner, "`y_pred`")
        else:
            predicted = _predicted_labels(
                y_pred, self.num_classes, self.threshold, self.from_logits, owner
            )
        shapes = (tuple(y_true.shape), tuple(y_pred.shape))
        check_same_size(tuple(labels.shape), tuple(predicted.shape), owner, shapes)
        _check_labels_in_range(labels, self.num_classes, self.ignore_label, owner, "`y_true`")
        if self.y_pred_is_labels:
            _check_labels_in_range(predicted, self.num_classes, None, owner, "`y_pred`")
        weight = _pixel_weights(sample_weight, labels, owner)
        cm = confusion_matrix(labels, predicted, self.num_classes, self.ignore_label, weight)
        self.total_cm.assign_add(ops.cast(cm, self.total_cm.dtype))

    def result(self):
        return ops.cast(self.total_cm, self.dtype)


class _ClassScore(ConfusionMatrix):
    """Per-class score from the accumulated confusion matrix, macro mean over present."""

    config_keys = (*ConfusionMatrix.config_keys, "per_class", "classes")

    def __init__(
        self,
        num_classes,
        ignore_label=None,
        per_class=False,
        classes=None,
        y_pred_is_labels=False,
        threshold=0.5,
        from_logits=False,
        name=None,
        dtype=None,
    ):
        super().__init__(
            num_classes,
            ignore_label=ignore_label,
            y_pred_is_labels=y_pred_is_labels,
            threshold=threshold,
            from_logits=from_logits,
            name=name,
            dtype=dtype,
        )
        owner = type(self).__name__
        self.per_class = bool(per_class)
        self.classes = check_classes(classes, owner)
        if self.classes is not None and max(self.classes) >= self.num_classes:
            raise ValueError(
                f"{owner}: `classes` must be ids < num_classes="
                f"{self.num_classes}; got {self.classes}."
            )

    def result_per_class(self):
        """(C,) float32 scores, NaN for classes absent from both y_true and y_pred."""
        return ops.cast(self.score_fn(self.total_cm), self.dtype)

    def result(self):
        scores = self.result_per_class()
        if self.per_class:
            return scores
        return mean_over_present(scores, self.classes)


@keras.saving.register_keras_serializable(package="kerasseg")
class MeanIoU(_ClassScore):
    """Mean intersection over union (Jaccard index; Everingham et al., "The PASCAL Visual
    Object Classes (VOC) challenge", IJCV 2010).

    `result()`: the mean of ``IoU_c = TP / (TP + FP + FN)`` over the classes present in
    `y_true` or `y_pred` (``sklearn.metrics.jaccard_score(average="macro")``), restricted to
    `classes` if given; 0 before any pixel is counted. ``per_class=True`` makes `result()` the
    (C,) vector (also `result_per_class()`), NaN for classes present in neither.

    Args:
        num_classes, ignore_label, y_pred_is_labels, threshold, from_logits: as
            `ConfusionMatrix`.
        per_class: return the per-class vector instead of the mean.
        classes: None or the class ids to average over.
    """

    default_name = "mean_iou"
    score_fn = staticmethod(iou_per_class)


@keras.saving.register_keras_serializable(package="kerasseg")
class DiceScore(_ClassScore):
    """Dice coefficient / F1 per class, ``2 TP / (2 TP + FP + FN)`` (Dice 1945, Sorensen
    1948), macro mean over the classes present in `y_true` or `y_pred`
    (``sklearn.metrics.f1_score(average="macro")``). For the Dice of the foreground of a
    binary map use ``DiceScore(2, classes=[1])``.

    Args:
        num_classes, ignore_label, per_class, classes, y_pred_is_labels, threshold,
            from_logits: as `MeanIoU`.
    """

    default_name = "dice_score"
    score_fn = staticmethod(dice_per_class)


@keras.saving.register_keras_serializable(package="kerasseg")
class PixelAccuracy(ConfusionMatrix):
    """Global pixel accuracy: correctly labelled / counted (non-ignored) pixels.

    Args:
        num_classes, ignore_label, y_pred_is_labels, threshold, from_logits: as
            `ConfusionMatrix`.
    """

    default_name = "pixel_accuracy"

    def result(self):
        return ops.cast(pixel_accuracy(self.total_cm), self.dtype)


# ----------------------------------------------------------------------------- Rand / VI


def _check_convention(convention, owner):
    if convention not in CONVENTIONS:
        raise ValueError(f"{owner}: `convention` must be one of {CONVENTIONS}; got {convention!r}.")
    return convention


def _group_sizes(keys, weight):
    """For rows sorted by `keys` (list of (B, P) int arrays), the total weight of each
    pixel's run of equal keys, per pixel, (B, P)."""
    batch = ops.shape(weight)[0]
    size = ops.shape(weight)[1]
    change = None
    for key in keys:
        step = ops.not_equal(key[:, 1:], key[:, :-1])
        change = step if change is None else ops.logical_or(change, step)
    starts = ops.concatenate([ops.ones_like(change[:, :1]), change], axis=1)
    run = ops.cumsum(ops.cast(starts, "int32"), axis=1) - 1
    run = run + ops.reshape(ops.arange(batch, dtype="int32") * size, (-1, 1))
    run = ops.reshape(run, (-1,))
    counts = ops.segment_sum(ops.reshape(weight, (-1,)), run, num_segments=batch * size)
    return ops.reshape(ops.take(counts, run), (batch, size))


def _sorted_by(perm, *arrays):
    return [ops.take_along_axis(a, perm, axis=1) for a in arrays]


def _rand_info(true_labels, pred_labels, convention):
    """Per-image Rand / information scores of (B, P) int32 label rows; dict of (B,) float32."""
    wide = _wide_float()
    t, p = true_labels, pred_labels
    weight = ops.cast(ops.not_equal(t, 0), "float32")  # foreground restriction
    singletons = convention == "isbi2012"

    # true segment sizes a(x)
    (t_s, w_s) = _sorted_by(ops.argsort(t, axis=1), t, weight)
    a = _group_sizes([t_s], w_s)
    true_w = ops.cast(w_s, wide)
    true_size = ops.cast(ops.maximum(a, 1.0), wide)

    # predicted segment sizes b(x); pred 0: one segment (skimage) or singletons (isbi2012)
    perm_p = ops.argsort(p, axis=1)
    (p_s, w_s) = _sorted_by(perm_p, p, weight)
    b = _group_sizes([p_s], w_s)
    if singletons:
        b = ops.where(ops.equal(p_s, 0), 1.0, b)
    pred_w = ops.cast(w_s, wide)
    pred_size = ops.cast(ops.maximum(b, 1.0), wide)

    # joint sizes n(x): stable sort by t of the p-sorted rows -> sorted by (t, p)
    (t_p,) = _sorted_by(perm_p, t)
    perm = ops.take_along_axis(perm_p, ops.argsort(t_p, axis=1), axis=1)
    (t_s, p_s, w_s) = _sorted_by(perm, t, p, weight)
    n = _group_sizes([t_s, p_s], w_s)
    if singletons:
        n = ops.where(ops.equal(p_s, 0), 1.0, n)
    joint_w = ops.cast(w_s, wide)
    joint_size = ops.cast(ops.maximum(n, 1.0), wide)

    total = ops.sum(true_w, axis=1)
    self_pairs = 0.0 if singletons else 1.0  # isbi2012: N^2 normalization; skimage: pairs
    s_true = ops.sum(true_w * (true_size - self_pairs), axis=1)
    s_pred = ops.sum(pred_w * (pred_size - self_pairs), axis=1)
    s_joint = ops.sum(joint_w * (joint_size - self_pairs), axis=1)

    log2 = math.log(2.0)
    log_total = ops.log(ops.maximum(total, 1.0)) / log2
    safe_total = ops.maximum(total, 1.0)
    h_true = log_total - ops.sum(true_w * ops.log(true_size), axis=1) / log2 / safe_total
    h_pred = log_total - ops.sum(pred_w * ops.log(pred_size), axis=1) / log2 / safe_total
    h_joint = log_total - ops.sum(joint_w * ops.log(joint_size), axis=1) / log2 / safe_total
    h_true_given_pred = ops.maximum(h_joint - h_pred, 0.0)
    h_pred_given_true = ops.maximum(h_joint - h_true, 0.0)
    mutual = ops.maximum(h_true - h_true_given_pred, 0.0)

    scores = {
        "v_rand": _ratio(2.0 * s_joint, s_true + s_pred, 1.0),
        "v_rand_split": _ratio(s_joint, s_true, 1.0),
        "v_rand_merge": _ratio(s_joint, s_pred, 1.0),
        "v_info": _ratio(2.0 * mutual, h_true + h_pred, 1.0),
        "v_info_split": _ratio(mutual, h_pred, 1.0),
        "v_info_merge": _ratio(mutual, h_true, 1.0),
        "h_true_given_pred": h_true_given_pred,
        "h_pred_given_true": h_pred_given_true,
    }
    scores["adapted_rand_error"] = 1.0 - scores["v_rand"]
    undefined = total <= 0
    return {
        key: ops.cast(ops.where(undefined, float("nan"), value), "float32")
        for key, value in scores.items()
    }


def _rand_inputs(true_labels, pred_labels, owner):
    """Check the label images of `rand_scores`; returns them as (batch, H, W) tensors and
    whether a single (H, W) image was given."""
    true_labels = ops.convert_to_tensor(true_labels)
    pred_labels = ops.convert_to_tensor(pred_labels)
    shape = tuple(true_labels.shape)
    if shape != tuple(pred_labels.shape):
        raise ValueError(
            f"{owner}: `true_labels` and `pred_labels` must have the same shape; "
            f"got {shape} and {tuple(pred_labels.shape)}."
        )
    if len(shape) == 4 and shape[-1] == 1:
        true_labels, pred_labels = true_labels[..., 0], pred_labels[..., 0]
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{owner}: label images must have shape (height, width) or (batch, "
            f"height, width); got shape {shape}."
        )
    for name, x in (("true_labels", true_labels), ("pred_labels", pred_labels)):
        if not keras.backend.standardize_dtype(x.dtype).startswith(("int", "uint")):
            raise TypeError(
                f"{owner}: `{name}` must be integer instance labels; got dtype "
                f"{keras.backend.standardize_dtype(x.dtype)}."
            )
    single = len(shape) == 2
    if single:
        true_labels, pred_labels = true_labels[None], pred_labels[None]
    return true_labels, pred_labels, single


def rand_scores(true_labels, pred_labels, convention="skimage"):
    """Foreground-restricted Rand and information-theoretic scores of instance label images.

    Only pixels where the TRUE label is non-zero count (N of them); each image is scored
    separately. With the contingency table ``n_ij`` (true segment i, predicted segment j),
    true sizes ``a_i`` and predicted sizes ``b_j``:

    * ``convention="skimage"`` (default): predicted 0 is one ordinary segment; pairs are of
      distinct pixels: ``S_J = sum n_ij^2 - N``, ``S_T = sum a_i^2 - N``,
      ``S_P = sum b_j^2 - N``. ``v_rand = 2 S_J / (S_T + S_P)`` equals
      ``1 - skimage.metrics.adapted_rand_error(true, pred)[0]``.
    * ``convention="isbi2012"``: the challenge's Fiji script (Trainable Weka Segmentation,
      ``RandError.foregroundRestrictedStatsN2`` / ``VariationOfInformation``): every pixel
      predicted 0 is its own singleton segment, and sums of squares include each pixel paired
      with itself (N^2 normalization): ``S_J = sum_{j>0} n_ij^2 + n_0``, ``S_P = sum_{j>0}
      b_j^2 + n_0``, ``S_T = sum a_i^2`` (n_0: true-foreground pixels predicted 0).

    A ratio whose denominator is 0 (e.g. a single segment on both sides) is 1; every score of
    an image without true foreground is NaN. Labels must fit int32. Rows are sorted with
    stable argsorts (TF, JAX and torch sorts are stable); sums use float64 where available.

    Args:
        true_labels: integer instance labels, (H, W) or (batch, H, W) (a trailing axis of 1
            is accepted), 0 = background.
        pred_labels: predicted instance labels of the same shape.
        convention: "skimage" or "isbi2012" (see above).

    Returns:
        A dict of float32 tensors (scalars for one image, (batch,) otherwise):

        * ``v_rand``: Rand F-score ``2 S_J / (S_T + S_P)`` (alpha = 0.5), the challenge's
          V_rand.
        * ``v_rand_merge = S_J / S_P`` (Rand precision, lowered by false merges) and
          ``v_rand_split = S_J / S_T`` (Rand recall, lowered by false splits). Note that
          scikit-image 0.26 returns them as (are, prec, rec) = (.., v_rand_split,
          v_rand_merge), the reverse of its docstring (scikit-image issue #6485).
        * ``adapted_rand_error = 1 - v_rand``.
        * ``h_true_given_pred`` = H(T|P) (false merges) and ``h_pred_given_true`` = H(P|T)
          (false splits), in bits: ``skimage.metrics.variation_of_information(true, pred,
          ignore_labels=[0])`` returns ``[h_pred_given_true, h_true_given_pred]`` (skimage
          convention).
        * ``v_info = 2 I(T; P) / (H(T) + H(P))``, the challenge's V_info
          (information-theoretic F-score, alpha = 0.5), with ``I = H(T) - H(T|P)``;
          ``v_info_split = I / H(P)`` and ``v_info_merge = I / H(T)``.

    Raises:
        ValueError: an unknown `convention`, label images of different shapes or of a rank
            other than 2 or 3.
        TypeError: label images that are not integers.
    """
    owner = "rand_scores"
    _check_convention(convention, owner)
    true_labels, pred_labels, single = _rand_inputs(true_labels, pred_labels, owner)
    batch = ops.shape(true_labels)[0]
    t = ops.reshape(ops.cast(true_labels, "int32"), (batch, -1))
    p = ops.reshape(ops.cast(pred_labels, "int32"), (batch, -1))
    scores = _rand_info(t, p, convention)
    if single:
        scores = {key: value[0] for key, value in scores.items()}
    return scores


class _InstanceScore(ConfigFromAttributes, keras.metrics.Metric):
    """Mean over images of one `rand_scores` entry of connected-component labellings."""

    score_key = None
    default_name = None
    config_keys = (
        "threshold",
        "foreground_class",
        "connectivity",
        "convention",
        "from_logits",
        "y_pred_is_labels",
        "instance_labels",
    )

    def __init__(
        self,
        threshold=0.5,
        foreground_class=1,
        connectivity=1,
        convention="skimage",
        from_logits=False,
        y_pred_is_labels=False,
        instance_labels=False,
        name=None,
        dtype=None,
    ):
        super().__init__(name=name or self.default_name, dtype=dtype)
        owner = type(self).__name__
        self.threshold = check_real(threshold, "threshold", owner, low=0.0, high=1.0)
        self.foreground_class = check_int(foreground_class, "foreground_class", 0, context=owner)
        self.connectivity = check_connectivity(connectivity, allow_none=False, context=owner)
        self.convention = _check_convention(convention, owner)
        self.from_logits = bool(from_logits)
        self.y_pred_is_labels = bool(y_pred_is_labels)
        self.instance_labels = bool(instance_labels)
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype=_wide_float(), name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype=_wide_float(), name="count"
        )

    def _foreground_of_prediction(self, y_pred, owner):
        if self.y_pred_is_labels:
            return ops.equal(_label_map(y_pred, owner, "`y_pred`"), self.foreground_class)
        shape = tuple(y_pred.shape)
        if len(shape) != 4:
            raise ValueError(
                f"{owner}: `y_pred` must have shape (batch, height, width, channels) of "
                f"probabilities (or pass y_pred_is_labels=True); got shape {shape}."
            )
        if shape[-1] == 1:
            if self.foreground_class > 1:
                raise ValueError(
                    f"{owner}: a 1-channel `y_pred` has classes 0 and 1; got "
                    f"foreground_class={self.foreground_class}."
                )
            p = ops.cast(y_pred[..., 0], "float32")
            if self.from_logits:
                p = ops.sigmoid(p)
            above = p > self.threshold
            return above if self.foreground_class == 1 else ops.logical_not(above)
        if shape[-1] is not None and self.foreground_class >= shape[-1]:
            raise ValueError(
                f"{owner}: `foreground_class` must be < the {shape[-1]} channels "
                f"of `y_pred`; got {self.foreground_class}."
            )
        return ops.equal(ops.argmax(y_pred, axis=-1), self.foreground_class)

    def _instance_labels(self, y_true, y_pred, owner):
        """The instance label maps of `y_true` and `y_pred`: as given with
        `instance_labels`, else the connected components of their foregrounds."""
        if self.instance_labels:
            return _label_map(y_true, owner, "`y_true`"), _label_map(y_pred, owner, "`y_pred`")
        true_fg = ops.equal(_label_map(y_true, owner, "`y_true`"), self.foreground_class)
        pred_fg = self._foreground_of_prediction(y_pred, owner)
        for name, x in (("`y_true`", true_fg), ("`y_pred`", pred_fg)):
            if len(x.shape) != 3:
                raise ValueError(
                    f"{owner}: {name} must be a batch of 2D maps; got shape {tuple(x.shape)}."
                )
        true_labels = label_components(true_fg, self.connectivity)[0]
        return true_labels, label_components(pred_fg, self.connectivity)[0]

    def update_state(self, y_true, y_pred, sample_weight=None):
        owner = type(self).__name__
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        true_labels, pred_labels = self._instance_labels(y_true, y_pred, owner)
        shapes = (tuple(y_true.shape), tuple(y_pred.shape))
        check_same_size(tuple(true_labels.shape), tuple(pred_labels.shape), owner, shapes)
        batch = ops.shape(true_labels)[0]
        t = ops.reshape(true_labels, (batch, -1))
        p = ops.reshape(pred_labels, (batch, -1))
        values = _rand_info(t, p, self.convention)[self.score_key]
        defined = ops.logical_not(ops.isnan(values))
        weight = ops.cast(defined, "float32")
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, "float32")
            if len(sample_weight.shape) != 1:
                raise ValueError(
                    f"{owner}: `sample_weight` must have shape (batch,) (one "
                    f"weight per image); got shape {tuple(sample_weight.shape)}."
                )
            weight = weight * sample_weight
        wide = self.total.dtype
        self.total.assign_add(ops.cast(ops.sum(ops.where(defined, values, 0.0) * weight), wide))
        self.count.assign_add(ops.cast(ops.sum(weight), wide))

    def result(self):
        return ops.cast(ops.divide_no_nan(self.total, self.count), self.dtype)


@keras.saving.register_keras_serializable(package="kerasseg")
class VRand(_InstanceScore):
    """Foreground-restricted Rand F-score V_rand (ISBI 2012 challenge; Arganda-Carreras et al.,
    Front. Neuroanat. 2015), averaged over images (the challenge averages over slices).

    Instances are the connected components (4-connected by default) of the true foreground
    ``y_true == foreground_class`` and of the predicted foreground: ``p > threshold`` for a
    1-channel probability map (``p <= threshold`` with ``foreground_class=0``), ``argmax ==
    foreground_class`` for C channels, ``y_pred == foreground_class`` with
    ``y_pred_is_labels=True``. With ``instance_labels=True`` both inputs are instance label
    maps (0 = background) used as they are. Scores are those of `rand_scores` (see there for
    `convention`); images without true foreground are skipped. Components are labelled in-graph
    (keras.ops while loop), so the metric works in compiled `fit`/`evaluate`. For ISBI labels
    ({0, 255}, 255 = cell interior) pass ``y_true / 255`` with the default foreground_class=1.
    The challenge's extra steps (sweeping thresholds, thinning predicted borders) are not done.

    Args:
        threshold: probability threshold for 1-channel `y_pred`.
        foreground_class: class id of the instances' pixels (cell interior).
        connectivity: 1 (4-neighbours, default) or 2 (8-neighbours); 4 and 8 are aliases.
        convention: "skimage" (default) or "isbi2012".
        from_logits: 1-channel `y_pred` holds logits.
        y_pred_is_labels: `y_pred` is an integer class map.
        instance_labels: both inputs are instance label maps already.
    """

    score_key = "v_rand"
    default_name = "v_rand"


@keras.saving.register_keras_serializable(package="kerasseg")
class VInfo(_InstanceScore):
    """Foreground-restricted information-theoretic score V_info = 2 I(T; P) / (H(T) + H(P))
    (ISBI 2012 challenge; Arganda-Carreras et al., Front. Neuroanat. 2015), averaged over
    images. Inputs as `VRand`; definitions in `rand_scores`.

    Args:
        threshold, foreground_class, connectivity, convention, from_logits,
            y_pred_is_labels, instance_labels: as `VRand`.
    """

    score_key = "v_info"
    default_name = "v_info"
