"""Box regression coding of torchvision's `BoxCoder`, for `[y1, x1, y2, x2]` boxes.

Boxes are kerasseg's ``[y1, x1, y2, x2]`` (pixels). **Deltas keep torchvision's order
``(dx, dy, dw, dh)``** -- x first -- so the regression layers converted from torchvision
(`rpn.head.bbox_pred`: channel ``a * 4 + k``; `roi_heads.box_predictor.bbox_pred`: output
``class * 4 + k``; ``k`` indexing (dx, dy, dw, dh)) need no reordering of their output channels.
Only the boxes are in y-first order.

With ``w = x2 - x1`` (no "+1"), ``h = y2 - y1``, centres ``cx = x1 + 0.5 * w``,
``cy = y1 + 0.5 * h`` and weights ``(wx, wy, ww, wh)``:

* encode: ``dx = wx * (gx - cx) / w``, ``dy = wy * (gy - cy) / h``, ``dw = ww * log(gw / w)``,
  ``dh = wh * log(gh / h)``;
* decode: ``dw, dh`` are divided by their weights and clamped from above at ``clip``
  (``log(1000 / 16)``), then ``x = dx / wx * w + cx``, ``w' = exp(dw) * w`` and the corners are
  ``centre -/+ 0.5 * size``.

The arithmetic follows torchvision's float32 operation order
(`torchvision/models/detection/_utils.py`, `encode_boxes` and `BoxCoder.decode_single`).

References: Girshick et al., "Rich feature hierarchies...", CVPR 2014 (appendix C);
Ren et al., "Faster R-CNN", NeurIPS 2015 (arXiv:1506.01497).
"""

import math

from keras import ops

from kerasseg.ops.checks import is_number

__all__ = [
    "BBOX_XFORM_CLIP",
    "BOX_HEAD_WEIGHTS",
    "DELTA_ORDER",
    "RPN_BOX_WEIGHTS",
    "decode",
    "encode",
]

#: Order of the 4 regression values of one box (torchvision's).
DELTA_ORDER = ("dx", "dy", "dw", "dh")
#: `BoxCoder` weights (wx, wy, ww, wh) of the RPN.
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
#: `BoxCoder` weights (wx, wy, ww, wh) of the Fast R-CNN box head.
BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
#: Upper clamp of dw and dh before `exp` (torchvision's `bbox_xform_clip`).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_weights(weights):
    try:
        values = tuple(weights)
    except TypeError:
        raise TypeError(f"`weights` must be 4 numbers (wx, wy, ww, wh); got {weights!r}.") from None
    if len(values) != 4 or any(not is_number(v) or not v > 0 for v in values):
        raise ValueError(f"`weights` must be 4 positive numbers (wx, wy, ww, wh); got {weights!r}.")
    return tuple(float(v) for v in values)


def _last_dim(name, x, multiple_of):
    rank = len(x.shape)
    size = x.shape[-1] if rank else None
    if rank < 1 or size is None or size % multiple_of or size == 0:
        raise ValueError(
            f"`{name}` must have a known last dimension that is a positive multiple of "
            f"{multiple_of}; got shape {tuple(x.shape)}."
        )
    return size


def _check_boxes(name, boxes):
    if len(boxes.shape) < 1 or boxes.shape[-1] != 4:
        raise ValueError(
            f"`{name}` must end in 4 coordinates [y1, x1, y2, x2]; got shape {tuple(boxes.shape)}."
        )


def _float(x):
    x = ops.convert_to_tensor(x)
    if "float" not in str(x.dtype):
        x = ops.cast(x, "float32")
    return x


def _widths_centres(boxes):
    """(ctr_y, ctr_x, h, w) of [y1, x1, y2, x2] boxes, torchvision's operation order."""
    y1, x1, y2, x2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    widths = x2 - x1
    heights = y2 - y1
    ctr_x = x1 + 0.5 * widths
    ctr_y = y1 + 0.5 * heights
    return ctr_y, ctr_x, heights, widths


def encode(reference_boxes, proposals, weights):
    """Regression targets that move `proposals` onto `reference_boxes`.

    Args:
        reference_boxes: tensor (..., 4), the target (ground-truth) boxes
            ``[y1, x1, y2, x2]``.
        proposals: tensor (..., 4), the boxes the targets are relative to (anchors or
            proposals), same or broadcastable shape.
        weights: 4 numbers ``(wx, wy, ww, wh)``; `RPN_BOX_WEIGHTS` or `BOX_HEAD_WEIGHTS`.

    Returns:
        Tensor (..., 4) of deltas in torchvision's order ``(dx, dy, dw, dh)`` (see
        `DELTA_ORDER`). Like torchvision, a proposal of zero width or height gives inf/nan;
        filter such boxes first.

    Raises:
        ValueError: the weights are not 4 positive numbers or the boxes do not end in 4.
    """
    wx, wy, ww, wh = _check_weights(weights)
    reference_boxes = _float(reference_boxes)
    proposals = _float(proposals)
    _check_boxes("reference_boxes", reference_boxes)
    _check_boxes("proposals", proposals)
    ex_ctr_y, ex_ctr_x, ex_heights, ex_widths = _widths_centres(proposals)
    gt_ctr_y, gt_ctr_x, gt_heights, gt_widths = _widths_centres(reference_boxes)
    dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
    dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
    dw = ww * ops.log(gt_widths / ex_widths)
    dh = wh * ops.log(gt_heights / ex_heights)
    return ops.stack([dx, dy, dw, dh], axis=-1)


def decode(deltas, boxes, weights, clip=BBOX_XFORM_CLIP):
    """Apply regression `deltas` to `boxes`; several classes at once.

    Args:
        deltas: tensor (..., 4 * K), deltas ``(dx, dy, dw, dh)`` for K classes, class-major
            (``k * 4 + j``), as torchvision's ``BoxCoder.decode_single`` takes them (K = 1
            for the RPN, 91 for the box head).
        boxes: tensor (..., 4), the reference boxes ``[y1, x1, y2, x2]`` (anchors or
            proposals); their leading dimensions must equal those of `deltas` or broadcast
            to them (e.g. anchors (N, 4) with deltas (B, N, 4)).
        weights: 4 numbers ``(wx, wy, ww, wh)``; `RPN_BOX_WEIGHTS` or `BOX_HEAD_WEIGHTS`.
        clip: float, the upper clamp of the (weight-divided) dw and dh before `exp`.

    Returns:
        Tensor (..., 4 * K) of decoded boxes ``[y1, x1, y2, x2]`` per class, same shape as
        `deltas` (reshape to (..., K, 4) for per-class boxes). Not clipped to the image.

    Raises:
        ValueError: an argument is out of range or a tensor has the wrong last dimension.
    """
    wx, wy, ww, wh = _check_weights(weights)
    if not is_number(clip) or math.isnan(clip):
        raise ValueError(f"`clip` must be a real number; got {clip!r}.")
    deltas = _float(deltas)
    boxes = ops.cast(_float(boxes), deltas.dtype)
    size = _last_dim("deltas", deltas, 4)
    _check_boxes("boxes", boxes)
    ctr_y, ctr_x, heights, widths = _widths_centres(boxes)
    ctr_y, ctr_x = ops.expand_dims(ctr_y, -1), ops.expand_dims(ctr_x, -1)
    heights, widths = ops.expand_dims(heights, -1), ops.expand_dims(widths, -1)

    dx = deltas[..., 0::4] / wx
    dy = deltas[..., 1::4] / wy
    dw = ops.minimum(deltas[..., 2::4] / ww, clip)
    dh = ops.minimum(deltas[..., 3::4] / wh, clip)

    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (ops.exp(dw) * widths)
    half_h = 0.5 * (ops.exp(dh) * heights)
    out = ops.stack(
        [pred_ctr_y - half_h, pred_ctr_x - half_w, pred_ctr_y + half_h, pred_ctr_x + half_w],
        axis=-1,
    )
    if size == 4:
        return ops.squeeze(out, axis=-2)
    return ops.reshape(out, ops.shape(deltas))
