"""Evaluate a segmentation model on a labelled dataset and write a report.

    results = kerasseg.evaluation.evaluate(model, dataset, num_classes=11, ignore_label=11,
                                           class_names=info.class_names)
    kerasseg.evaluation.write_report(results, "runs/camvid_val")  # .json and .md

Scores come from `kerasseg.metrics`: one confusion matrix accumulated over the whole dataset
(pixel accuracy, per-class IoU and Dice, their means over the classes present in the ground
truth or the prediction, as scikit-learn's macro averages) and, on request, the ISBI 2012
instance scores V_rand and V_info of the foreground (class 1), averaged over images.

With `keep_examples=k` the per-image mean IoU and pixel accuracy of every image are kept too,
and the k worst and k best images (image, mask, prediction) in two bounded heaps while the
data stream by, for `kerasseg.evaluation.write_report_page`.
"""

import heapq
import math

import keras
import numpy as np
from keras import ops

from kerasseg import metrics as metrics_lib
from kerasseg.evaluation.report import mean_of_defined
from kerasseg.inference.files import display_image
from kerasseg.inference.semantic import cell_instances, probabilities
from kerasseg.ops.checks import check_int
from kerasseg.ops.labelling import label_components

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
    progress=False,
    keep_examples=0,
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
        progress: show a progress bar over the batches (`keras.utils.Progbar`, on stdout).
        keep_examples: k >= 0; with k > 0 also score every image on its own and keep the k
            worst and k best images by per-image mean IoU (at most half of the scored
            images each, so that no image is both), for a report page.

    Returns:
        {"overall": {"pixel_accuracy", "mean_iou", "mean_dice"[, "v_rand", "v_info"]},
         "per_class": {name: {"iou", "dice", "pixels"}}, "images": N,
         "confusion_matrix": C x C pixel counts (rows true, columns predicted)}.
        "pixels" counts the true (not ignored) pixels of a class; a class absent from both
        the ground truth and the prediction has IoU and Dice None and is left out of the means.
        With `keep_examples` > 0 also "examples": {"score": "mean_iou", "ignore_label",
        "per_image": N {"mean_iou", "pixel_accuracy"} (None for an image whose pixels are
        all ignored), "worst": examples from the lowest score up, "best": from the highest
        down}, each example {"index" (0-based, in data set order), "mean_iou",
        "pixel_accuracy", "image" (uint8, `display_image`), "mask" and "prediction" (int32
        (H, W) class ids; the mask keeps the ignore label)}. Per-image mean IoU averages the
        classes present in that image's ground truth or prediction, as the overall one does.
    """
    if watershed_seeds is not None and not instance_metrics:
        raise ValueError(
            "`watershed_seeds` labels the cells of the instance metrics: set "
            "`instance_metrics=True` too."
        )
    class_names = _class_names(class_names, num_classes)
    keep_examples = check_int(keep_examples, "keep_examples", 0, context="evaluate")
    examples = _Examples(keep_examples) if keep_examples else None
    confusion = metrics_lib.ConfusionMatrix(
        num_classes, ignore_label=ignore_label, threshold=threshold
    )
    instance_scores = {"v_rand": [], "v_info": []}
    images = 0
    bar = keras.utils.Progbar(_length(dataset), verbose=int(bool(progress)), unit_name="batch")
    for batches, (x, masks) in enumerate(_pairs(dataset), start=1):
        probs = probabilities(model, ops.convert_to_numpy(x), from_logits=from_logits)
        masks = np.asarray(ops.convert_to_numpy(masks)).astype(np.int32)
        if masks.ndim == 3:
            masks = masks[..., None]
        confusion.update_state(masks, probs)
        if instance_metrics:
            scores = _instance_scores(masks, probs, threshold, watershed_seeds)
            for key, values in scores.items():
                instance_scores[key].extend(values)
        if examples is not None:
            _score_images(examples, x, masks, probs, num_classes, ignore_label, threshold)
        images += int(probs.shape[0])
        bar.update(batches)
    if images == 0:
        raise ValueError("`dataset` yielded no batches.")
    if bar.target is None:
        bar.update(batches, finalize=True)  # a dataset of unknown length: end the bar's line
    overall, per_class, cm = _scores(confusion, class_names)
    if instance_metrics:
        overall.update({key: mean_of_defined(values) for key, values in instance_scores.items()})
    results = {
        "overall": overall,
        "per_class": per_class,
        "images": images,
        "confusion_matrix": np.round(cm).astype(np.int64).tolist(),
    }
    if examples is not None:
        results["examples"] = examples.result("mean_iou", ignore_label=ignore_label)
    return results


class _Examples:
    """The per-image scores of a stream of images, and the `keep` lowest- and highest-scoring
    images in two bounded heaps (memory: 2 * `keep` examples, whatever the stream's length).

    Images are ordered by (score, index), a total order, so that the worst and the best
    are told apart among equal scores; images without a score (None) are in neither.
    """

    def __init__(self, keep):
        self.keep = keep
        self.scores = []
        self._low = []  # max-heap of the lowest keys: entries (-score, -index, example)
        self._high = []  # min-heap of the highest keys: entries (score, index, example)

    def add(self, scores, key, make_example):
        """Record one image's `scores` (a dict holding `key`); `make_example()` builds its
        example (a dict) only when it enters a heap."""
        index = len(self.scores)
        self.scores.append(scores)
        score = scores[key]
        if score is None:
            return
        low = len(self._low) < self.keep or (score, index) < (-self._low[0][0], -self._low[0][1])
        high = len(self._high) < self.keep or (score, index) > self._high[0][:2]
        if not (low or high):
            return
        example = {"index": index, **scores, **make_example()}
        if low:
            entry = (-score, -index, example)
            push = heapq.heappush if len(self._low) < self.keep else heapq.heapreplace
            push(self._low, entry)
        if high:
            push = heapq.heappush if len(self._high) < self.keep else heapq.heapreplace
            push(self._high, (score, index, example))

    def result(self, key, **extra):
        """{"score": key, **extra, "per_image", "worst", "best"}: at most `keep` each and at
        most half of the scored images as the worst (rounded up), the rest as the best."""
        scored = sum(scores[key] is not None for scores in self.scores)
        worst_count = min(self.keep, (scored + 1) // 2)
        best_count = min(self.keep, scored - worst_count)
        worst = [entry[2] for entry in sorted(self._low, reverse=True)][:worst_count]
        best = [entry[2] for entry in sorted(self._high, reverse=True)][:best_count]
        return {
            "score": key,
            **extra,
            "per_image": self.scores,
            "worst": worst,
            "best": best,
        }


def _predicted_labels(probs, threshold):
    """int32 (B, H, W) class ids of probabilities, as `ConfusionMatrix` counts them."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] > threshold).astype(np.int32)
    return np.argmax(probs, axis=-1).astype(np.int32)


def _image_scores(mask, prediction, num_classes, ignore_label):
    """{"mean_iou", "pixel_accuracy"} of one image's confusion matrix (None when all its
    pixels are ignored)."""
    counted = mask != ignore_label if ignore_label is not None else np.ones(mask.shape, bool)
    if not counted.any():
        return {"mean_iou": None, "pixel_accuracy": None}
    pairs = mask[counted].astype(np.int64) * num_classes + prediction[counted]
    cm = np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
    cm = cm.astype(np.float64)
    iou = metrics_lib.iou_per_class(cm)
    return {
        "mean_iou": _number(ops.convert_to_numpy(metrics_lib.mean_over_present(iou))),
        "pixel_accuracy": _number(ops.convert_to_numpy(metrics_lib.pixel_accuracy(cm))),
    }


def _score_images(examples, x, masks, probs, num_classes, ignore_label, threshold):
    """Score each image of a batch on its own and offer it to `examples`."""
    predictions = _predicted_labels(probs, threshold)
    images = ops.convert_to_numpy(x)
    for image, mask, prediction in zip(images, masks[..., 0], predictions, strict=True):
        scores = _image_scores(mask, prediction, num_classes, ignore_label)

        def make_example(image=image, mask=mask, prediction=prediction):
            return {
                "image": np.array(display_image(image)),
                "mask": mask.astype(np.int32),  # copies: no view keeps the batch alive
                "prediction": prediction.copy(),
            }

        examples.add(scores, "mean_iou", make_example)


def _length(dataset):
    """The number of batches of `dataset`, or None when it does not say (a generator, or
    a `tf.data.Dataset` of unknown or infinite length)."""
    try:
        return len(dataset)
    except TypeError:
        return None


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
