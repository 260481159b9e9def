"""Region proposal network of torchvision's Mask R-CNN: head, output flattening, proposals.

* `RPNHead`: torchvision's `RPNHead` (3x3 conv + ReLU, then 1x1 `cls_logits` with one sigmoid
  logit per anchor and 1x1 `bbox_pred` with 4 deltas per anchor) shared over the FPN levels,
  on NHWC maps.
* `flatten_rpn_outputs`: torchvision's `concat_box_prediction_layers` -- (B, N) logits and
  (B, N, 4) deltas, anchor ``n`` of `anchors.grid_anchors` in row ``n``.
* `select_proposals`: torchvision's `RegionProposalNetwork.filter_proposals` at inference, with
  fixed-size padded outputs.
* `rpn_proposals`: the three steps above on FPN maps, with the anchors of the padded batch.
* `rpn_head_weights_from_state_dict`: loads torchvision's ``rpn.head.*`` weights.

Channel layouts (same as torchvision, so converted weights need no output reordering):
`cls_logits` channel ``a`` is anchor ``a`` of a location; `bbox_pred` channel ``a * 4 + k`` is
delta ``k`` of anchor ``a`` with ``k`` in (dx, dy, dw, dh) order (see
`box_coding.DELTA_ORDER`). Anchor ``a`` of a location is cell anchor ``a`` of
`anchors.base_anchors` (ratio-major: 0.5, 1, 2 for the default single size).

References: Ren et al., "Faster R-CNN", NeurIPS 2015 (arXiv:1506.01497); torchvision
`models/detection/rpn.py`.
"""

import keras
import numpy as np
from keras import layers, ops

from kerasseg.models.maskrcnn import anchors as anchor_lib
from kerasseg.models.maskrcnn.box_coding import RPN_BOX_WEIGHTS, decode
from kerasseg.ops import detection as kops
from kerasseg.ops.checks import check_number, check_positive_int

__all__ = [
    "FlattenRPNOutputs",
    "RPNHead",
    "flatten_rpn_outputs",
    "rpn_head_weights_from_state_dict",
    "rpn_proposals",
    "select_proposals",
]


@keras.saving.register_keras_serializable(package="kerasseg")
class RPNHead(layers.Layer):
    """torchvision's `RPNHead`, shared over FPN levels (NHWC).

    Call on a list of feature maps ``[(B, H_l, W_l, C), ...]``; returns
    ``(objectness, deltas)``, two lists with one entry per level: logits
    (B, H_l, W_l, num_anchors) and deltas (B, H_l, W_l, 4 * num_anchors), delta channel
    ``a * 4 + k`` with ``k`` in (dx, dy, dw, dh) order.

    Sublayers ``conv_0`` ... ``conv_{conv_depth-1}``, ``cls_logits`` and ``bbox_pred`` are
    Conv2D layers; weights are initialised as torchvision (normal, std 0.01; zero biases).

    Args:
        num_anchors: anchors per location (3 for `maskrcnn_resnet50_fpn`).
        channels: filters of the 3x3 convolution(s) (torchvision: the FPN's 256 channels).
        conv_depth: number of 3x3 conv + ReLU blocks: 1 for v1, 2 for
            `maskrcnn_resnet50_fpn_v2`.
    """

    def __init__(self, num_anchors=3, channels=256, conv_depth=1, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = check_positive_int(num_anchors, "num_anchors")
        self.channels = check_positive_int(channels, "channels")
        self.conv_depth = check_positive_int(conv_depth, "conv_depth")

        def conv(filters, size, name, activation=None):
            return layers.Conv2D(
                filters,
                size,
                padding="same",  # 3x3 stride 1: torchvision's padding=1 on both sides
                activation=activation,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                bias_initializer="zeros",
                dtype=self.dtype_policy,
                name=name,
            )

        self.convs = [
            conv(self.channels, 3, f"conv_{i}", activation="relu") for i in range(self.conv_depth)
        ]
        self.cls_logits = conv(self.num_anchors, 1, "cls_logits")
        self.bbox_pred = conv(4 * self.num_anchors, 1, "bbox_pred")

    def _check_shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape:
            raise ValueError(
                "RPNHead must be called on a non-empty list of (batch, height, width, channels) "
                f"feature maps; got {input_shape!r}."
            )
        if all(s is None or isinstance(s, int) for s in input_shape):
            raise ValueError(
                "RPNHead must be called on a list of feature maps (one per FPN level); got a "
                f"single shape {tuple(input_shape)}."
            )
        channels = set()
        for level, shape in enumerate(input_shape):
            if len(shape) != 4:
                raise ValueError(
                    f"Feature map {level} must have shape (batch, height, width, channels); got "
                    f"{tuple(shape)}."
                )
            channels.add(shape[-1])
        if None in channels or len(channels) != 1:
            raise ValueError(
                "All feature maps must have the same, known number of channels; got "
                f"{[tuple(s) for s in input_shape]}."
            )
        return channels.pop()

    def build(self, input_shape):
        in_channels = self._check_shapes(input_shape)
        shape = (None, None, None, in_channels)
        for conv in self.convs:
            conv.build(shape)
            shape = (None, None, None, self.channels)
        self.cls_logits.build(shape)
        self.bbox_pred.build(shape)

    def call(self, features, training=None):
        if not isinstance(features, (list, tuple)):
            raise ValueError(
                "RPNHead must be called on a list of feature maps (one per FPN level); got "
                f"{type(features).__name__}."
            )
        objectness, deltas = [], []
        for feature in features:
            t = feature
            for conv in self.convs:
                t = conv(t, training=training)
            objectness.append(self.cls_logits(t, training=training))
            deltas.append(self.bbox_pred(t, training=training))
        return objectness, deltas

    def compute_output_shape(self, input_shape):
        self._check_shapes(input_shape)
        objectness = [tuple(s[:3]) + (self.num_anchors,) for s in input_shape]
        deltas = [tuple(s[:3]) + (4 * self.num_anchors,) for s in input_shape]
        return objectness, deltas

    def get_config(self):
        config = super().get_config()
        config.update(
            num_anchors=self.num_anchors, channels=self.channels, conv_depth=self.conv_depth
        )
        return config


def flatten_rpn_outputs(objectness_per_level, deltas_per_level):
    """Concatenate per-level RPN outputs in anchor order (`concat_box_prediction_layers`).

    Args:
        objectness_per_level: list of tensors (B, H_l, W_l, A).
        deltas_per_level: list of tensors (B, H_l, W_l, 4 * A), delta channel ``a * 4 + k``.

    Returns:
        `(logits, deltas)`: (B, N) objectness logits and (B, N, 4) deltas (dx, dy, dw, dh);
        the row order is levels concatenated and (y, x, anchor) within a level, the order of
        `anchors.grid_anchors`.

    Raises:
        ValueError: the lists are empty, of different lengths, or hold maps of other shapes.
    """
    for name, value in (
        ("objectness_per_level", objectness_per_level),
        ("deltas_per_level", deltas_per_level),
    ):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(
                f"`{name}` must be a non-empty list with one tensor per level; got "
                f"{type(value).__name__}."
            )
    if len(objectness_per_level) != len(deltas_per_level):
        raise ValueError(
            "`objectness_per_level` and `deltas_per_level` need the same number of levels; got "
            f"{len(objectness_per_level)} and {len(deltas_per_level)}."
        )
    if any(isinstance(x, keras.KerasTensor) for x in [*objectness_per_level, *deltas_per_level]):
        # Symbolic (functional-model) inputs: the dynamic batch size is only known at run time.
        return FlattenRPNOutputs()(list(objectness_per_level), list(deltas_per_level))
    logits, deltas = [], []
    for level, (obj, reg) in enumerate(zip(objectness_per_level, deltas_per_level, strict=True)):
        if len(obj.shape) != 4 or len(reg.shape) != 4:
            raise ValueError(
                f"Level {level}: objectness and deltas must be (B, H, W, C) maps; got shapes "
                f"{tuple(obj.shape)} and {tuple(reg.shape)}."
            )
        if obj.shape[-1] is None or reg.shape[-1] != 4 * obj.shape[-1]:
            raise ValueError(
                f"Level {level}: deltas need 4 channels per objectness channel; got shapes "
                f"{tuple(obj.shape)} and {tuple(reg.shape)}."
            )
        batch = ops.shape(obj)[0]
        logits.append(ops.reshape(obj, (batch, -1)))
        deltas.append(ops.reshape(reg, (batch, -1, 4)))
    return ops.concatenate(logits, axis=1), ops.concatenate(deltas, axis=1)


@keras.saving.register_keras_serializable(package="kerasseg")
class FlattenRPNOutputs(layers.Layer):
    """`flatten_rpn_outputs` as a layer, for functional models.

    Call with ``(objectness_per_level, deltas_per_level)``; returns ``(logits, deltas)``.
    `flatten_rpn_outputs` uses this layer by itself when given symbolic `keras.Input` tensors.
    """

    def call(self, objectness_per_level, deltas_per_level, training=None):
        return flatten_rpn_outputs(objectness_per_level, deltas_per_level)

    def compute_output_shape(self, objectness_per_level_shape, deltas_per_level_shape):
        batch = objectness_per_level_shape[0][0]
        total = 0
        for shape in objectness_per_level_shape:
            if total is not None and None not in shape[1:]:
                total += shape[1] * shape[2] * shape[3]
            else:
                total = None
        return (batch, total), (batch, total, 4)


def select_proposals(
    objectness,
    deltas,
    anchors,
    image_sizes,
    num_anchors_per_level,
    pre_nms_top_n=1000,
    post_nms_top_n=1000,
    nms_threshold=0.7,
    score_threshold=0.0,
    min_size=1e-3,
):
    """RPN proposals as torchvision's `RegionProposalNetwork.filter_proposals` (inference).

    Per image: the `pre_nms_top_n` highest logits of each level, sigmoid, decode with weights
    (1, 1, 1, 1) (dw, dh clamped at log(1000/16)), clip to the image's unpadded
    ``[0, height] x [0, width]``, drop boxes with a side < `min_size`, keep scores
    ``>= score_threshold``, NMS per level at IoU `nms_threshold`, keep the best `post_nms_top_n`.

    Args:
        objectness: (B, N) logits from `flatten_rpn_outputs`.
        deltas: (B, N, 4) deltas (dx, dy, dw, dh) from `flatten_rpn_outputs`.
        anchors: (N, 4) `anchors.grid_anchors` of the padded batch, ``[y1, x1, y2, x2]``.
        image_sizes: int (B, 2) unpadded (height, width) of each image (after the detection
            transform's resize).
        num_anchors_per_level: list of ints or scalar tensors, the anchors of each level
            (`anchors.num_anchors_per_level`); they sum to N.
        pre_nms_top_n: proposals kept per level before NMS (torchvision: 1000 at test time,
            2000 in training).
        post_nms_top_n: proposals kept per image after NMS (torchvision: 1000 at test time,
            2000 in training).
        nms_threshold: IoU of the per-level NMS (torchvision: 0.7).
        score_threshold: the lowest objectness probability kept (torchvision: 0.0).
        min_size: the smallest box side kept (torchvision: 1e-3).

    Returns:
        `(boxes, scores, num_valid)`: boxes (B, post_nms_top_n, 4) ``[y1, x1, y2, x2]`` by
        decreasing score, scores (B, post_nms_top_n) sigmoid probabilities, num_valid int32
        (B,); rows past ``num_valid[b]`` are zero padding.

    Raises:
        ValueError: an argument is out of range or a tensor has the wrong shape.
    """
    pre_nms_top_n = check_positive_int(pre_nms_top_n, "pre_nms_top_n")
    post_nms_top_n = check_positive_int(post_nms_top_n, "post_nms_top_n")
    check_number(nms_threshold, "nms_threshold", 0.0, 1.0)
    check_number(score_threshold, "score_threshold", 0.0, 1.0)
    check_number(min_size, "min_size", minimum=0.0)
    counts = _level_counts(num_anchors_per_level)
    objectness, deltas, anchors, image_sizes = _proposal_tensors(
        objectness, deltas, anchors, image_sizes, counts
    )
    top_idx, levels = _top_k_per_level(objectness, counts, pre_nms_top_n)

    logits = ops.take_along_axis(objectness, top_idx, axis=1)
    sel_deltas = ops.take_along_axis(deltas, ops.expand_dims(top_idx, -1), axis=1)
    sel_anchors = ops.take(anchors, top_idx, axis=0)
    boxes = decode(sel_deltas, sel_anchors, RPN_BOX_WEIGHTS)
    scores = ops.sigmoid(logits)

    sizes = ops.cast(image_sizes, boxes.dtype)
    boxes = kops.clip_boxes(boxes, sizes[:, 0:1], sizes[:, 1:2])
    keep = kops.remove_small_boxes(boxes, min_size) & (scores >= score_threshold)
    return _nms_per_image(boxes, scores, keep, levels, nms_threshold, post_nms_top_n)


def _level_counts(num_anchors_per_level):
    """The anchor count of each level, checked: Python ints or int32 scalar tensors."""
    if not isinstance(num_anchors_per_level, (list, tuple)) or not num_anchors_per_level:
        raise ValueError(
            "`num_anchors_per_level` must be a non-empty list of anchor counts, one per level; "
            f"got {num_anchors_per_level!r}."
        )
    return [
        anchor_lib.int_or_tensor("num_anchors_per_level", n, 0, float_error=ValueError)
        for n in num_anchors_per_level
    ]


def _proposal_tensors(objectness, deltas, anchors, image_sizes, counts):
    """The inputs of `select_proposals` as tensors of checked shapes (float32 but the sizes)."""
    objectness = ops.convert_to_tensor(objectness)
    deltas = ops.convert_to_tensor(deltas)
    anchors = ops.convert_to_tensor(anchors)
    image_sizes = ops.convert_to_tensor(image_sizes)
    for name, value, rank, last, expected in (
        ("objectness", objectness, 2, None, "(B, N)"),
        ("deltas", deltas, 3, 4, "(B, N, 4)"),
        ("anchors", anchors, 2, 4, "(N, 4)"),
        ("image_sizes", image_sizes, 2, 2, "(B, 2)"),
    ):
        if len(value.shape) != rank or (last is not None and value.shape[-1] != last):
            raise ValueError(f"`{name}` must have shape {expected}; got {tuple(value.shape)}.")
    if all(isinstance(c, int) for c in counts) and anchors.shape[0] is not None:
        if sum(counts) != anchors.shape[0]:
            raise ValueError(
                f"`num_anchors_per_level` sums to {sum(counts)} but there are "
                f"{anchors.shape[0]} anchors."
            )
    return (
        ops.cast(objectness, "float32"),
        ops.cast(deltas, "float32"),
        ops.cast(anchors, "float32"),
        image_sizes,
    )


def _top_k_per_level(objectness, counts, pre_nms_top_n):
    """Anchor indices (B, K) of the `pre_nms_top_n` best logits of each level, level by
    level as torchvision's `_get_top_n_idx`, and the level (K,) of each column."""
    top_idx, levels, offset = [], [], 0
    for level, count in enumerate(counts):
        k = (
            min(pre_nms_top_n, count)
            if isinstance(count, int)
            else ops.minimum(pre_nms_top_n, count)
        )
        level_logits = ops.slice(objectness, (0, offset), (ops.shape(objectness)[0], count))
        _, idx = ops.top_k(level_logits, k, sorted=True)
        top_idx.append(idx + offset)
        levels.append(ops.zeros_like(idx[0]) + level)
        offset = offset + count
    top_idx = ops.concatenate(top_idx, axis=1)  # (B, K)
    levels = ops.cast(ops.concatenate(levels, axis=0), "int32")  # (K,)
    return top_idx, levels


def _nms_per_image(boxes, scores, keep, levels, nms_threshold, post_nms_top_n):
    """NMS within each level of every image's kept boxes, padded to `post_nms_top_n` rows."""

    def one_image(args):
        image_boxes, image_scores, image_keep = args
        index = ops.nonzero(image_keep)[0]
        image_boxes = ops.take(image_boxes, index, axis=0)
        image_scores = ops.take(image_scores, index, axis=0)
        image_levels = ops.take(levels, index, axis=0)
        kept = kops.batched_nms(
            image_boxes,
            image_scores,
            image_levels,
            nms_threshold,
            max_output_size=post_nms_top_n,
        )
        count = ops.shape(kept)[0]
        pad = post_nms_top_n - count
        image_boxes = ops.concatenate(
            [ops.take(image_boxes, kept, axis=0), ops.zeros((pad, 4), image_boxes.dtype)], axis=0
        )
        image_scores = ops.concatenate(
            [ops.take(image_scores, kept, axis=0), ops.zeros((pad,), image_scores.dtype)], axis=0
        )
        return (
            ops.reshape(image_boxes, (post_nms_top_n, 4)),
            ops.reshape(image_scores, (post_nms_top_n,)),
            ops.cast(count, "int32"),
        )

    batch = boxes.shape[0]
    if batch is None:  # dynamic batch size (graph mode): one map_fn-style loop
        return ops.map(one_image, (boxes, scores, keep))
    results = [one_image((boxes[b], scores[b], keep[b])) for b in range(batch)]
    return tuple(ops.stack(list(parts)) for parts in zip(*results, strict=True))


def rpn_proposals(rpn_head, features, padded_size, image_sizes, training=False, **selection):
    """Run `rpn_head` on FPN maps and select the proposals of every image.

    Args:
        rpn_head: an `RPNHead`.
        features: the FPN maps P2..P6, a list of (B, H_l, W_l, C) tensors.
        padded_size: (height, width) of the padded batch the maps were computed from.
        image_sizes: int (B, 2) unpadded sizes of the resized images.
        training: the head's training flag.
        **selection: keyword arguments of `select_proposals` (`pre_nms_top_n`, ...).

    Returns:
        `(objectness, deltas, anchors, proposals, num_proposals)`: the flattened head outputs
        (B, N) and (B, N, 4), the (N, 4) anchors, and the (B, P, 4) proposals with their
        int32 (B,) counts. The selection sees the outputs without gradient, as torchvision's
        (it detaches them).
    """
    objectness, deltas = flatten_rpn_outputs(*rpn_head(features, training=training))
    feature_sizes = [(ops.shape(f)[1], ops.shape(f)[2]) for f in features]
    anchors = anchor_lib.grid_anchors(padded_size, feature_sizes)
    proposals, _, num_proposals = select_proposals(
        ops.stop_gradient(objectness),
        ops.stop_gradient(deltas),
        anchors,
        image_sizes,
        anchor_lib.num_anchors_per_level(feature_sizes),
        **selection,
    )
    return objectness, deltas, anchors, proposals, num_proposals


def _numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def rpn_head_weights_from_state_dict(state_dict, layer, prefix="rpn.head."):
    """Load torchvision ``rpn.head.*`` weights into an `RPNHead` (built here if needed).

    Mapping (torch conv kernels are (out, in, kh, kw); Keras' are (kh, kw, in, out), so every
    kernel is transposed by (2, 3, 1, 0), biases are copied; output channels keep their order):

    ==========================================================  =========================
    torchvision key (current / legacy ``version < 2`` name)      `RPNHead` weights
    ==========================================================  =========================
    ``{prefix}conv.{i}.0.weight`` / ``{prefix}conv.weight``        ``conv_{i}`` kernel
    ``{prefix}conv.{i}.0.bias`` / ``{prefix}conv.bias``            ``conv_{i}`` bias
    ``{prefix}cls_logits.weight`` (A, C, 1, 1), ``.bias`` (A,)     ``cls_logits``
    ``{prefix}bbox_pred.weight`` (4A, C, 1, 1), ``.bias`` (4A,)    ``bbox_pred``
    ==========================================================  =========================

    The legacy names (single conv, checkpoints saved before torchvision's RPNHead version 2)
    are accepted only for ``conv_depth == 1``.

    Args:
        state_dict: a mapping of torchvision keys to numpy arrays or torch tensors.
        layer: the `RPNHead` to load into.
        prefix: the prefix of the RPN head's keys.

    Returns:
        `layer`, with the weights assigned.

    Raises:
        KeyError: a key is missing.
        ValueError: a weight's shape does not fit.
        TypeError: `layer` is not an `RPNHead` or `state_dict` is not a mapping.
    """
    if not isinstance(layer, RPNHead):
        raise TypeError(f"`layer` must be an RPNHead; got {type(layer).__name__}.")
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"`state_dict` must be a mapping; got {type(state_dict).__name__}.")

    def get(key, legacy=None):
        if key in state_dict:
            return _numpy(state_dict[key])
        if legacy is not None and legacy in state_dict:
            return _numpy(state_dict[legacy])
        names = key if legacy is None else f"{key} (or legacy {legacy})"
        raise KeyError(f"state_dict has no {names}.")

    pairs = []
    for i, conv in enumerate(layer.convs):
        legacy = layer.conv_depth == 1
        pairs.append(
            (
                conv,
                get(f"{prefix}conv.{i}.0.weight", f"{prefix}conv.weight" if legacy else None),
                get(f"{prefix}conv.{i}.0.bias", f"{prefix}conv.bias" if legacy else None),
            )
        )
    pairs.append(
        (layer.cls_logits, get(f"{prefix}cls_logits.weight"), get(f"{prefix}cls_logits.bias"))
    )
    pairs.append(
        (layer.bbox_pred, get(f"{prefix}bbox_pred.weight"), get(f"{prefix}bbox_pred.bias"))
    )
    if not layer.built:
        in_channels = pairs[0][1].shape[1] if pairs[0][1].ndim == 4 else None
        if in_channels is None:
            raise ValueError(f"{prefix}conv weight must be 4-D; got shape {pairs[0][1].shape}.")
        layer.build([(None, None, None, int(in_channels))])
    for conv, weight, bias in pairs:
        if weight.ndim != 4:
            raise ValueError(f"{conv.name}: torch kernel must be 4-D; got shape {weight.shape}.")
        kernel = np.transpose(weight, (2, 3, 1, 0))
        expected = tuple(conv.kernel.shape)
        if kernel.shape != expected or bias.shape != (expected[-1],):
            raise ValueError(
                f"{conv.name}: torchvision weight {weight.shape} / bias {bias.shape} do not fit "
                f"the Keras kernel {expected}."
            )
        conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return layer
