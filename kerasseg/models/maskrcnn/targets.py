"""Training targets of Mask R-CNN as torchvision builds them: matching, sampling, encoding.

* `match`: torchvision's `Matcher` on an IoU matrix (ground truth x predictions): the best
  ground truth of each prediction, `BELOW_LOW` (-1) under the low threshold, `BETWEEN` (-2)
  between the thresholds, and optionally the low-quality matches (each ground truth keeps
  the predictions of its highest IoU, ties included).
* `sample`: torchvision's `BalancedPositiveNegativeSampler` with static shapes: at most
  ``batch_size * positive_fraction`` random positives and the rest random negatives, as
  fixed-size index lists with validity flags (random priorities instead of `randperm`).
* `rpn_targets` and `roi_targets`: one image's anchor labels / regression targets (RPN:
  fg 0.7, bg 0.3, low-quality matches, 256 anchors, half positive) and sampled RoIs with
  class labels, regression targets and matched ground truth (heads: ground-truth boxes
  appended to the proposals, fg = bg = 0.5, 512 RoIs, a quarter positive).

Ground truth comes padded to M rows with a count ``n`` (the layout of
`kerasseg.data.instances.to_padded`); rows past ``n`` never match. An image without
instances gives only negatives. TensorFlow ops (Mask R-CNN runs on the TensorFlow backend).

Reference: Ren et al., "Faster R-CNN", NeurIPS 2015 (arXiv:1506.01497); He et al., "Mask
R-CNN", ICCV 2017 (arXiv:1703.06870); torchvision `models/detection/_utils.py`, `rpn.py`
and `roi_heads.py`.
"""

import tensorflow as tf

from kerasseg.models.maskrcnn.box_coding import BOX_HEAD_WEIGHTS, RPN_BOX_WEIGHTS, encode
from kerasseg.ops import detection as kops

__all__ = ["BELOW_LOW", "BETWEEN", "match", "roi_targets", "rpn_targets", "sample"]

BELOW_LOW = -1
BETWEEN = -2


def match(iou, high, low, allow_low_quality_matches, valid_rows=None):
    """Index of the matched ground truth of each prediction (torchvision's `Matcher`).

    Args:
        iou: float (M, N) IoU of M ground-truth boxes with N predictions.
        high, low: predictions with best IoU >= `high` match; < `low` get `BELOW_LOW`;
            in between `BETWEEN`.
        allow_low_quality_matches: give every ground truth the predictions with which it
            has its highest IoU (ties included), whatever that IoU.
        valid_rows: bool (M,) or None; rows that are padding never match.

    Returns:
        int32 (N,): ground-truth row, `BELOW_LOW` or `BETWEEN`.
    """
    iou = tf.convert_to_tensor(iou, tf.float32)
    if valid_rows is None:
        valid_rows = tf.ones(tf.shape(iou)[:1], tf.bool)
    valid_rows = tf.convert_to_tensor(valid_rows, tf.bool)
    iou = tf.where(valid_rows[:, None], iou, -1.0)
    any_row = tf.reduce_any(valid_rows)
    best = tf.reduce_max(iou, axis=0)
    best_row = tf.argmax(iou, axis=0, output_type=tf.int32)
    matches = tf.where(best < low, BELOW_LOW, tf.where(best < high, BETWEEN, best_row))
    if allow_low_quality_matches:
        highest_per_row = tf.reduce_max(iou, axis=1)
        is_highest = (iou == highest_per_row[:, None]) & valid_rows[:, None]
        matches = tf.where(tf.reduce_any(is_highest, axis=0), best_row, matches)
    return tf.where(any_row, matches, BELOW_LOW)


def sample(labels, priorities, batch_size, positive_fraction):
    """Random balanced sample of positives (label >= 1) and negatives (label 0).

    torchvision's `BalancedPositiveNegativeSampler`: ``p = min(#positives,
    int(batch_size * positive_fraction))`` random positives and ``min(#negatives,
    batch_size - p)`` random negatives; labels < 0 are never sampled. The random choice
    takes the highest `priorities` (uniform in [0, 1)).

    Args:
        labels: int (N,) labels: >= 1 positive, 0 negative, < 0 ignored.
        priorities: float (N,) uniform random numbers in [0, 1).
        batch_size: the number of samples.
        positive_fraction: the largest fraction of positives in the sample.

    Returns:
        (indices, valid): int32 (P + batch_size,) with the P = ``int(batch_size *
        positive_fraction)`` positive slots first, and bool flags of the slots in use.
    """
    positives = int(batch_size * positive_fraction)
    positive = labels >= 1
    negative = tf.equal(labels, 0)
    count = tf.shape(labels)[0]
    pos_key, pos_index = tf.math.top_k(
        tf.where(positive, priorities, -1.0), tf.minimum(positives, count)
    )
    pos_valid = pos_key >= 0
    taken = tf.reduce_sum(tf.cast(pos_valid, tf.int32))
    neg_key, neg_index = tf.math.top_k(
        tf.where(negative, priorities, -1.0), tf.minimum(batch_size, count)
    )
    neg_valid = (neg_key >= 0) & (tf.range(tf.shape(neg_key)[0]) < batch_size - taken)
    indices = _pad(tf.concat([_pad(pos_index, positives), neg_index], 0), positives + batch_size)
    valid = tf.concat([_pad(pos_valid, positives), neg_valid], 0)
    return indices, _pad(valid, positives + batch_size)


def _pad(values, length):
    """`values` padded with zeros (False) at the end to `length` rows."""
    extra = length - tf.shape(values)[0]
    padded = tf.pad(values, [[0, extra]] + [[0, 0]] * (values.shape.rank - 1))
    return tf.ensure_shape(padded, [length] + values.shape.as_list()[1:])


def rpn_targets(
    anchors,
    gt_boxes,
    num_gt,
    priorities,
    batch_size=256,
    positive_fraction=0.5,
    fg_iou=0.7,
    bg_iou=0.3,
):
    """Sampled anchors of one image with their objectness labels and box targets.

    Args:
        anchors: (N, 4) anchors of the padded batch.
        gt_boxes: (M, 4) ground-truth boxes (resized-image pixels), `num_gt` of them valid.
        num_gt: the number of valid ground-truth rows.
        priorities: (N,) uniform random numbers for the sampling.
        batch_size: anchors sampled (torchvision: 256).
        positive_fraction: the largest fraction of positives (torchvision: 0.5).
        fg_iou: the IoU from which an anchor is positive (torchvision: 0.7).
        bg_iou: the IoU below which an anchor is negative (torchvision: 0.3).

    Returns:
        (indices, labels, targets, valid): int32 (S,) anchor rows, float32 (S,) objectness
        labels (1 or 0), float32 (S, 4) `encode`d deltas (zeros for negatives), bool (S,)
        slots in use; S = ``int(batch_size * positive_fraction) + batch_size``.
    """
    valid_rows = tf.range(tf.shape(gt_boxes)[0]) < num_gt
    matches = match(kops.box_iou(gt_boxes, anchors), fg_iou, bg_iou, True, valid_rows)
    labels = tf.where(matches >= 0, 1, tf.where(tf.equal(matches, BELOW_LOW), 0, -1))
    indices, valid = sample(labels, priorities, batch_size, positive_fraction)
    labels, targets, valid, _ = _labels_and_targets(
        labels, matches, indices, valid, gt_boxes, anchors, RPN_BOX_WEIGHTS
    )
    return indices, tf.cast(labels, tf.float32), targets, valid


def _labels_and_targets(labels, matches, indices, valid, gt_boxes, references, weights):
    labels = tf.gather(labels, indices)
    matched = tf.maximum(tf.gather(matches, indices), 0)
    positive = valid & (labels >= 1)
    targets = encode(tf.gather(gt_boxes, matched), tf.gather(references, indices), weights)
    targets = tf.where(positive[:, None], targets, 0.0)  # no inf/nan from empty matches
    labels = tf.where(valid, labels, 0)
    return labels, targets, valid, matched


def roi_targets(
    proposals,
    num_proposals,
    gt_boxes,
    gt_classes,
    num_gt,
    priorities,
    batch_size=512,
    positive_fraction=0.25,
    fg_iou=0.5,
    bg_iou=0.5,
):
    """Sampled RoIs of one image: proposals plus ground-truth boxes, matched and sampled.

    Args:
        proposals: (P, 4) RPN proposals.
        num_proposals: the number of valid proposal rows.
        gt_boxes: (M, 4) ground-truth boxes.
        gt_classes: (M,) ground-truth classes.
        num_gt: the number of valid ground-truth rows.
        priorities: (P + M,) uniform random numbers for the sampling.
        batch_size: RoIs sampled (torchvision: 512).
        positive_fraction: the largest fraction of positives (torchvision: 0.25).
        fg_iou: the IoU from which a RoI is positive (torchvision: 0.5).
        bg_iou: the IoU below which a RoI is negative (torchvision: 0.5).

    Returns:
        (rois, labels, targets, valid, matched): float32 (S, 4) RoIs, int32 (S,) class
        labels (0 = background), float32 (S, 4) deltas with the box-head weights (10, 10,
        5, 5) (zeros except for positives), bool (S,) slots in use and int32 (S,) matched
        ground-truth row; the first ``int(batch_size * positive_fraction)`` slots hold the
        positives.
    """
    proposals = tf.stop_gradient(tf.cast(proposals, tf.float32))
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    candidates = tf.concat([proposals, gt_boxes], 0)
    in_use = tf.concat(
        [
            tf.range(tf.shape(proposals)[0]) < num_proposals,
            tf.range(tf.shape(gt_boxes)[0]) < num_gt,
        ],
        0,
    )
    valid_rows = tf.range(tf.shape(gt_boxes)[0]) < num_gt
    matches = match(kops.box_iou(gt_boxes, candidates), fg_iou, bg_iou, False, valid_rows)
    classes = tf.gather(tf.cast(gt_classes, tf.int32), tf.maximum(matches, 0))
    labels = tf.where(matches >= 0, classes, tf.where(tf.equal(matches, BELOW_LOW), 0, -1))
    labels = tf.where(in_use, labels, -1)
    indices, valid = sample(labels, priorities, batch_size, positive_fraction)
    labels, targets, valid, matched = _labels_and_targets(
        labels, matches, indices, valid, gt_boxes, candidates, BOX_HEAD_WEIGHTS
    )
    return tf.gather(candidates, indices), labels, targets, valid, matched
