"""Evaluate a segmentation model on a labelled dataset and write a report.

    results = kerasseg.evaluation.evaluate(model, dataset, num_classes=11, ignore_label=11,
                                           class_names=info.class_names)
    kerasseg.evaluation.write_report(results, "runs/camvid_val")  # .json and .md

Scores come from `kerasseg.metrics`: one confusion matrix accumulated over the whole dataset
(pixel accuracy, per-class IoU and Dice, their means over the classes present in the ground
truth or the prediction, as scikit-learn's macro averages) and, on request, the ISBI 2012
instance scores V_rand and V_info of the foreground (class 1), averaged over images.
"""

import math

import numpy as np
from keras import ops

from kerasseg import metrics as metrics_lib
from kerasseg.evaluation.report import mean_of_defined
from kerasseg.inference.semantic import cell_instances, probabilities
from kerasseg.ops.components import label_components

__all__ = ["evaluate"]


def _number(value):
    value = float(value)
    return None if math.isnan(value) else value


def _instance_scores(masks, probs, threshold, watershed_seeds):
    """Per-image V_rand and V_info of the true 4-connected regions of class 1 against
    `cell_instances` of the prediction."""
    true_labels = label_components(masks[..., 0] == 1, 1)[0]
    pred_labels = cell_instances(probs, threshold=threshold, watershed_seeds=watershed_seeds)
    scores = metrics_lib.rand_scores(true_labels, pred_labels)
    return {key: ops.convert_to_numpy(scores[key]).tolist() for key in ("v_rand", "v_info")}


def evaluate(
    model,
    dataset,
    *,
    num_classes,
    class_names=None,
    ignore_label=None,
    instance_metrics=False,
    threshold=0.5,
    watershed_seeds=None,
    from_logits=None,
):
    """Score `model` on every (images, masks) batch of `dataset`.

    Args:
        model: a `keras.Model` (or callable) taking float32 (B, H, W, C) images as the
            dataset gives them and returning (B, H, W, 1) sigmoid probabilities (binary,
            `num_classes=2`, class 1 where p > `threshold`) or (B, H, W, C) softmax
            probabilities or logits (argmax). Images that do not fit the model's
            `size_divisor` are padded and the outputs cropped back.
        dataset: an iterable of (images, masks) batches, masks int (B, H, W) or
            (B, H, W, 1) class ids, e.g. a `kerasseg.datasets` reader's dataset.
        num_classes: C (2 for a binary model).
        class_names: C names for the per-class table (default "0", "1", ...).
        ignore_label: mask value left out of every score (e.g. CamVid's 11), or None.
        instance_metrics: also compute V_rand and V_info (`kerasseg.metrics.rand_scores`,
            scikit-image convention) of the 4-connected components of class 1 (cell
            interior for ISBI 2012), labelled once per image and averaged over images with
            foreground (None when no image has any).
        threshold: probability threshold for 1-channel outputs.
        watershed_seeds: for the instance metrics of a 1-channel model, label the predicted
            cells with `kerasseg.inference.cell_instances`' seeded watershed (seeds
            p > `watershed_seeds`) instead of the regions of p > `threshold`.
        from_logits: None detects logits from the model's "output" layer (kerasseg heads).

    Returns:
        {"overall": {"pixel_accuracy", "mean_iou", "mean_dice"[, "v_rand", "v_info"]},
         "per_class": {name: {"iou", "dice", "pixels"}}, "images": N,
         "confusion_matrix": C x C pixel counts (rows true, columns predicted)}.
        "pixels" counts the true (not ignored) pixels of a class; a class absent from both
        the ground truth and the prediction has IoU and Dice None and is left out of the means.
    """
    if watershed_seeds is not None and not instance_metrics:
        raise ValueError(
            "`watershed_seeds` labels the cells of the instance metrics: set "
            "`instance_metrics=True` too."
        )
    class_names = _class_names(class_names, num_classes)
    confusion = metrics_lib.ConfusionMatrix(
        num_classes, ignore_label=ignore_label, threshold=threshold
    )
    instance_scores = {"v_rand": [], "v_info": []}
    images = 0
    for x, masks in _pairs(dataset):
        probs = probabilities(model, ops.convert_to_numpy(x), from_logits=from_logits)
        masks = np.asarray(ops.convert_to_numpy(masks)).astype(np.int32)
        if masks.ndim == 3:
            masks = masks[..., None]
        confusion.update_state(masks, probs)
        if instance_metrics:
            scores = _instance_scores(masks, probs, threshold, watershed_seeds)
            for key, values in scores.items():
                instance_scores[key].extend(values)
        images += int(probs.shape[0])
    if images == 0:
        raise ValueError("`dataset` yielded no batches.")
    overall, per_class, cm = _scores(confusion, class_names)
    if instance_metrics:
        overall.update({key: mean_of_defined(values) for key, values in instance_scores.items()})
    return {
        "overall": overall,
        "per_class": per_class,
        "images": images,
        "confusion_matrix": np.round(cm).astype(np.int64).tolist(),
    }


def _pairs(dataset):
    """The (images, masks) batches of `dataset`, checked to be pairs."""
    for batch in dataset:
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise ValueError(
                "`dataset` must yield (images, masks) batches; got an element of type "
                f"{type(batch).__name__}."
            )
        yield batch


def _class_names(class_names, num_classes):
    """The names of the per-class table: given, or "0", "1", ..."""
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes or len(set(class_names)) != num_classes:
        raise ValueError(
            f"`class_names` must be {num_classes} distinct names (num_classes={num_classes}); "
            f"got {class_names!r}."
        )
    return class_names


def _scores(confusion, class_names):
    """(overall, per_class, confusion matrix) from the accumulated `ConfusionMatrix`."""
    cm = ops.convert_to_numpy(confusion.total_cm)
    iou = ops.convert_to_numpy(metrics_lib.iou_per_class(cm))
    dice = ops.convert_to_numpy(metrics_lib.dice_per_class(cm))
    overall = {
        "pixel_accuracy": _number(ops.convert_to_numpy(metrics_lib.pixel_accuracy(cm))),
        "mean_iou": _number(ops.convert_to_numpy(metrics_lib.mean_over_present(iou))),
        "mean_dice": _number(ops.convert_to_numpy(metrics_lib.mean_over_present(dice))),
    }
    per_class = {
        name: {"iou": _number(iou[i]), "dice": _number(dice[i]), "pixels": int(cm[i].sum())}
        for i, name in enumerate(class_names)
    }
    return overall, per_class, cm
