"""Mask R-CNN training losses with torchvision's definitions and normalisations.

* RPN (`rpn_loss`): binary cross-entropy of the objectness logits of the sampled anchors,
  averaged over them; smooth L1 (beta 1/9) of the positives' deltas, summed and divided by
  the number of sampled anchors (torchvision `RegionProposalNetwork.compute_loss`).
* Box head (`box_head_loss`): softmax cross-entropy over the sampled RoIs, averaged; smooth L1
  (beta 1/9) of the ground-truth class's deltas of the positives, summed and divided by the
  number of sampled RoIs (`roi_heads.fastrcnn_loss`).
* Mask head (`mask_loss`): per-pixel binary cross-entropy of the ground-truth class's 28x28
  logits against RoIAligned soft targets, averaged over the positives' pixels; 0 without
  positives (`roi_heads.maskrcnn_loss`).

Counts are over the whole batch, as torchvision concatenates the images' samples. Every
function takes fixed-size tensors with a `valid` flag per slot (slots past the sample are
padding) and returns a float32 scalar.

`detection_losses` runs a Mask R-CNN model in training mode on images and padded instance
targets and returns the five terms.
"""

import tensorflow as tf

from kerasseg.models.maskrcnn.rpn import rpn_proposals
from kerasseg.models.maskrcnn.targets import roi_targets, rpn_targets
from kerasseg.ops import detection as kops

__all__ = [
    "BETA",
    "LOSS_NAMES",
    "MASK_SIZE",
    "box_head_loss",
    "detection_losses",
    "mask_loss",
    "rpn_loss",
    "smooth_l1",
]

BETA = 1.0 / 9.0  # smooth-L1 beta of torchvision's RPN and box head
LOSS_NAMES = ("rpn_objectness", "rpn_box", "classifier", "box_regression", "mask")
MASK_SIZE = 28


def smooth_l1(difference, beta=BETA):
    """Elementwise smooth L1: ``0.5 x^2 / beta`` where ``|x| < beta``, else ``|x| - beta / 2``."""
    x = tf.abs(difference)
    return tf.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def _weights_and_count(valid):
    weights = tf.cast(valid, tf.float32)
    return weights, tf.maximum(tf.reduce_sum(weights), 1.0)


def rpn_loss(logits, deltas, labels, targets, valid):
    """(objectness loss, box loss) of the sampled anchors.

    Args:
        logits: (..., S) objectness logits.
        deltas: (..., S, 4) predicted deltas.
        labels: (..., S) 1 for positives, 0 for negatives.
        targets: (..., S, 4) encoded ground truth.
        valid: (..., S) bool, the sampled slots.

    Returns:
        Two float32 scalars.
    """
    weights, count = _weights_and_count(valid)
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    objectness = tf.reduce_sum(weights * entropy) / count
    positive = weights * labels
    box = smooth_l1(tf.cast(deltas, tf.float32) - tf.cast(targets, tf.float32))
    return objectness, tf.reduce_sum(positive[..., None] * box) / count


def box_head_loss(class_logits, box_regression, labels, targets, valid):
    """(classification loss, box regression loss) of the sampled RoIs.

    Args:
        class_logits: (R, K) logits.
        box_regression: (R, 4 K) class-major deltas.
        labels: (R,) int classes (0 = background).
        targets: (R, 4) encoded ground truth.
        valid: (R,) bool, the sampled slots.

    Returns:
        Two float32 scalars.
    """
    weights, count = _weights_and_count(valid)
    labels = tf.cast(labels, tf.int32)
    entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(class_logits, tf.float32)
    )
    classification = tf.reduce_sum(weights * entropy) / count
    per_class = tf.reshape(tf.cast(box_regression, tf.float32), [tf.shape(labels)[0], -1, 4])
    predicted = tf.gather(per_class, labels, axis=1, batch_dims=1)
    positive = weights * tf.cast(labels > 0, tf.float32)
    box = smooth_l1(predicted - tf.cast(targets, tf.float32))
    return classification, tf.reduce_sum(positive[:, None] * box) / count


def mask_loss(mask_logits, labels, mask_targets, valid):
    """Binary cross-entropy of each positive RoI's ground-truth-class mask logits.

    Args:
        mask_logits: (R, 28, 28, K) logits.
        labels: (R,) classes.
        mask_targets: (R, 28, 28) in [0, 1].
        valid: (R,) bool, the positive RoIs.

    Returns:
        A float32 scalar.
    """
    weights, count = _weights_and_count(valid)
    logits = tf.transpose(tf.cast(mask_logits, tf.float32), [0, 3, 1, 2])
    logits = tf.gather(logits, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(mask_targets, tf.float32), logits=logits
    )
    pixels = tf.cast(tf.shape(logits)[1] * tf.shape(logits)[2], tf.float32)
    return tf.reduce_sum(weights[:, None, None] * entropy) / (count * pixels)


def _per_image(fn, elements, signature):
    return tf.map_fn(fn, elements, fn_output_signature=signature)


def detection_losses(model, images, image_sizes, targets, training=True):
    """The five Mask R-CNN loss terms of a batch, as a dict keyed by `LOSS_NAMES`.

    Args:
        model: a Mask R-CNN from `kerasseg.load("maskrcnn_...")`.
        images: (B, H, W, 3) RGB 0..255.
        image_sizes: (B, 2) real sizes, or None.
        targets: padded instance targets (`kerasseg.data.instances.to_padded`, batched):
            "boxes" (B, M, 4) [y1, x1, y2, x2] in image pixels, "class_ids" (B, M),
            "masks" (B, M, H, W) 0/1 and "num_instances" (B,).

    Returns:
        A dict of float32 scalars keyed by `LOSS_NAMES`.
    """
    detector = model.get_layer("detector")
    sizes = model.get_layer("image_size")(images, image_sizes)
    batch, resized = model.get_layer("transform")(images, sizes)
    features = model.get_layer(model.backbone_name)(batch, training=training)
    features = [features[f"P{level}"] for level in range(2, 7)]
    padded = tf.shape(batch)[1:3]
    objectness, deltas, anchors, proposals, num_proposals = rpn_proposals(
        detector.rpn_head,
        features,
        padded,
        resized,
        training=training,
        pre_nms_top_n=detector.rpn_pre_nms_top_n_train,
        post_nms_top_n=detector.rpn_post_nms_top_n_train,
        nms_threshold=detector.rpn_nms_threshold,
    )

    # Ground truth in the resized images' pixels (torchvision's resize_boxes ratios).
    ratio = tf.cast(resized, tf.float32) / tf.cast(sizes, tf.float32)
    ratio = tf.tile(ratio, [1, 2])[:, None, :]
    gt = {
        "boxes": tf.cast(targets["boxes"], tf.float32) * ratio,
        "classes": tf.cast(targets["class_ids"], tf.int32),
        "count": tf.cast(targets["num_instances"], tf.int32),
    }
    options = detector.training_options
    rpn_terms = _rpn_terms(objectness, deltas, anchors, gt, options["rpn"])
    sample = _roi_sample(proposals, num_proposals, gt, options["roi"])
    levels = features[:4]
    box_terms = _box_terms(detector, levels, padded, sample, training)
    mask = _mask_term(
        detector, levels, padded, sample, targets["masks"], ratio, options["roi"], training
    )
    return dict(zip(LOSS_NAMES, (*rpn_terms, *box_terms, mask), strict=True))


def _rpn_terms(objectness, deltas, anchors, gt, options):
    """(objectness loss, box loss) of the RPN on anchors sampled per image."""
    count = tf.shape(objectness)[0]
    anchor_indices, anchor_labels, anchor_targets, anchor_valid = _per_image(
        lambda args: rpn_targets(anchors, *args, **options),
        (gt["boxes"], gt["count"], tf.random.uniform([count, tf.shape(anchors)[0]])),
        (
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.bool),
        ),
    )
    return rpn_loss(
        tf.gather(objectness, anchor_indices, batch_dims=1),
        tf.gather(deltas, anchor_indices, batch_dims=1),
        anchor_labels,
        anchor_targets,
        anchor_valid,
    )


def _roi_sample(proposals, num_proposals, gt, options):
    """The RoIs sampled per image from the proposals and the ground truth (`roi_targets`)."""
    count = tf.shape(proposals)[0]
    priorities = tf.random.uniform([count, tf.shape(proposals)[1] + tf.shape(gt["boxes"])[1]])
    rois, labels, box_targets, valid, matched = _per_image(
        lambda args: roi_targets(*args, **options),
        (proposals, num_proposals, gt["boxes"], gt["classes"], gt["count"], priorities),
        (
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.bool),
            tf.TensorSpec([None], tf.int32),
        ),
    )
    return {
        "rois": rois,
        "labels": labels,
        "box_targets": box_targets,
        "valid": valid,
        "matched": matched,
    }


def _box_terms(detector, levels, padded, sample, training):
    """(classification loss, box regression loss) of the box head on the sampled RoIs."""
    rois = sample["rois"]
    count, slots = tf.shape(rois)[0], tf.shape(rois)[1]
    image_index = tf.repeat(tf.range(count), slots)
    pooled = kops.multiscale_roi_align(
        levels, tf.reshape(rois, [-1, 4]), image_index, padded, 7, sampling_ratio=2
    )
    class_logits, box_regression = detector.box_predictor(
        detector.box_head(pooled, training=training), training=training
    )
    return box_head_loss(
        class_logits,
        box_regression,
        tf.reshape(sample["labels"], [-1]),
        tf.reshape(sample["box_targets"], [-1, 4]),
        tf.reshape(sample["valid"], [-1]),
    )


def _mask_term(detector, levels, padded, sample, gt_masks, ratio, options, training):
    """The mask loss of the mask head on the positive slots of the sampled RoIs.

    The positives are the first ``int(batch_size * positive_fraction)`` slots of each image's
    sample. Their targets are the RoIAlign of the matched ground-truth mask at the original
    resolution (torchvision samples a nearest-resized copy; the same when the transform keeps
    the size), with `ratio` (B, 1, 4) mapping original to resized pixels.
    """
    count = tf.shape(sample["rois"])[0]
    positives = int(options["batch_size"] * options["positive_fraction"])
    mask_rois = tf.reshape(sample["rois"][:, :positives], [-1, 4])
    mask_labels = tf.reshape(sample["labels"][:, :positives], [-1])
    mask_valid = tf.reshape(sample["valid"][:, :positives], [-1]) & (mask_labels > 0)
    mask_image = tf.repeat(tf.range(count), positives)
    mask_pooled = kops.multiscale_roi_align(
        levels, mask_rois, mask_image, padded, 14, sampling_ratio=2
    )
    mask_logits = detector.mask_predictor(
        detector.mask_head(mask_pooled, training=training), training=training
    )
    mask_count = tf.shape(gt_masks)[1]
    original_rois = mask_rois / tf.repeat(ratio[:, 0], positives, axis=0)
    mask_index = mask_image * mask_count + tf.reshape(sample["matched"][:, :positives], [-1])
    flat_masks = tf.reshape(gt_masks, tf.concat([[-1], tf.shape(gt_masks)[2:], [1]], 0))
    mask_targets = kops.roi_align(
        flat_masks, original_rois, mask_index, MASK_SIZE, 1.0, sampling_ratio=0
    )[..., 0]
    return mask_loss(mask_logits, mask_labels, mask_targets, mask_valid)
