"""Mask R-CNN anchors, box coding and RPN against torchvision 0.29.

The torchvision outputs are committed in tests/fixtures/maskrcnn/rpn_reference.npz, written by
make_rpn_reference.py beside it, which also regenerates the seeded inputs used here.
"""

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.models.maskrcnn import anchors as anchor_lib
from kerasseg.models.maskrcnn import box_coding
from kerasseg.models.maskrcnn.rpn import (
    RPNHead,
    flatten_rpn_outputs,
    rpn_head_weights_from_state_dict,
    select_proposals,
)

FIXTURES = Path(__file__).parent / "fixtures" / "maskrcnn"


import make_rpn_reference as maker  # noqa: E402  (tests/fixtures/maskrcnn, on sys.path via conftest)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "rpn_reference.npz") as data:
        return dict(data)


def _rel(got, expected):
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    return np.max(np.abs(got - expected)) / np.max(np.abs(expected))


# --------------------------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------------------------


def test_base_anchors_match_torchvision(ref):
    for level, (sizes, ratios) in enumerate(zip(maker.SIZES, maker.RATIOS, strict=True)):
        np.testing.assert_array_equal(
            anchor_lib.base_anchors(sizes, ratios), ref["cell_anchors"][level]
        )
    np.testing.assert_array_equal(
        anchor_lib.base_anchors(32), [[-11, -23, 11, 23], [-16, -16, 16, 16], [-23, -11, 23, 11]]
    )
    # Several sizes per level: ratio-major, size-minor, rounding half to even.
    odd = anchor_lib.base_anchors(maker.ODD_SIZES, maker.ODD_RATIOS)
    np.testing.assert_array_equal(odd, ref["odd_cell_anchors"])
    assert odd.dtype == np.float32


@pytest.mark.parametrize("name", ["a", "b"])
def test_grid_anchors_match_torchvision(ref, name):
    image_size = maker.IMAGE_A if name == "a" else maker.IMAGE_B
    got = anchor_lib.grid_anchors(image_size, maker.feature_sizes(image_size))
    got = keras.ops.convert_to_numpy(got)
    expected = ref[f"anchors_{name}"].astype(np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    counts = anchor_lib.num_anchors_per_level(maker.feature_sizes(image_size))
    assert sum(counts) == len(expected)


def test_grid_anchors_stride_is_floor_division(ref):
    # P6 of the 224 x 288 batch is 4 x 5: strides 56 and 57, not 64 (torchvision's rule).
    sizes = maker.feature_sizes(maker.IMAGE_B)
    counts = anchor_lib.num_anchors_per_level(sizes)
    p6 = ref["anchors_b"][-counts[-1] :].astype(np.float32)
    centres = (p6[:, :2] + p6[:, 2:]) / 2
    assert sorted(set(centres[:, 0].tolist())) == [0, 56, 112, 168]
    assert sorted(set(centres[:, 1].tolist())) == [0, 57, 114, 171, 228]


def test_grid_anchors_graph_mode_dynamic_sizes(ref):
    @tf.function(
        input_signature=[tf.TensorSpec((2,), tf.int32), tf.TensorSpec((5, 2), tf.int32)],
        autograph=False,
    )
    def run(image_size, feature_sizes):
        return anchor_lib.grid_anchors(image_size, [feature_sizes[i] for i in range(5)])

    for name, image_size in (("a", maker.IMAGE_A), ("b", maker.IMAGE_B)):
        got = run(tf.constant(image_size), tf.constant(maker.feature_sizes(image_size)))
        np.testing.assert_array_equal(got.numpy(), ref[f"anchors_{name}"].astype(np.float32))


def test_anchor_argument_errors():
    with pytest.raises(ValueError, match="aspect_ratios"):
        anchor_lib.base_anchors(32, (0.5, -1.0))
    with pytest.raises(ValueError, match="size"):
        anchor_lib.base_anchors(())
    with pytest.raises(TypeError, match="size"):
        anchor_lib.base_anchors("32")
    with pytest.raises(ValueError, match="one entry per feature level"):
        anchor_lib.grid_anchors((256, 320), [(64, 80)])
    with pytest.raises(ValueError, match="image_size"):
        anchor_lib.grid_anchors((256, 320, 3), maker.feature_sizes((256, 320)))
    with pytest.raises(TypeError, match=r"feature_sizes\[0\]"):
        anchor_lib.grid_anchors((256, 320), [(64.0, 80)] + maker.feature_sizes((256, 320))[1:])
    with pytest.raises(ValueError, match=r"feature_sizes\[1\]"):
        anchor_lib.grid_anchors((256, 320), [(64, 80), (0, 40), (16, 20), (8, 10), (4, 5)])
    with pytest.raises(ValueError, match="one entry per feature level"):
        anchor_lib.grid_anchors((256, 320), (64, 80))
    with pytest.raises(TypeError, match="feature_sizes"):
        anchor_lib.grid_anchors((256, 320), "P2")


# --------------------------------------------------------------------------------------------
# Box coding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, weights", [("rpn", box_coding.RPN_BOX_WEIGHTS), ("head", box_coding.BOX_HEAD_WEIGHTS)]
)
def test_encode_matches_torchvision(ref, name, weights):
    got = box_coding.encode(ref["box_reference"], ref["box_proposals"], weights)
    expected = ref[f"encode_{name}"]
    assert tuple(got.shape) == expected.shape
    assert _rel(got, expected) <= 1e-5


@pytest.mark.parametrize(
    "name, weights", [("rpn", box_coding.RPN_BOX_WEIGHTS), ("head", box_coding.BOX_HEAD_WEIGHTS)]
)
def test_decode_matches_torchvision(ref, name, weights):
    deltas = ref[f"box_{name}_deltas"]
    got = keras.ops.convert_to_numpy(box_coding.decode(deltas, ref["box_proposals"], weights))
    expected = ref[f"decode_{name}"]
    assert got.shape == deltas.shape == expected.shape
    assert _rel(got, expected) <= 1e-5
    # The fixture hits the clamp: no box grows by more than 1000/16 per side.
    sizes = ref["box_proposals"][:, 2:] - ref["box_proposals"][:, :2]
    got_sizes = (got[:, 3::4] - got[:, 1::4]) / sizes[:, 1:2]
    assert got_sizes.max() == pytest.approx(1000 / 16, rel=1e-5)


def test_decode_inverts_encode_with_batch_broadcast(ref):
    # Boxes of at least 10 px per side: the deltas stay below the clamp.
    big = np.all(ref["box_reference"][:, 2:] - ref["box_reference"][:, :2] > 10, axis=1)
    big &= np.all(ref["box_proposals"][:, 2:] - ref["box_proposals"][:, :2] > 10, axis=1)
    reference = ref["box_reference"][big][:50]
    proposals = ref["box_proposals"][big][:50]
    deltas = box_coding.encode(reference, proposals, box_coding.BOX_HEAD_WEIGHTS)
    # (B, N, 4) deltas against (N, 4) boxes, and 3 classes at once.
    batched = keras.ops.stack([deltas, deltas])
    decoded = box_coding.decode(batched, proposals, box_coding.BOX_HEAD_WEIGHTS)
    assert tuple(decoded.shape) == (2, 50, 4)
    np.testing.assert_allclose(decoded[1], reference, rtol=1e-5, atol=1e-3)
    three = keras.ops.concatenate([deltas, deltas * 0, deltas], axis=-1)
    decoded = keras.ops.convert_to_numpy(
        box_coding.decode(three, proposals, box_coding.BOX_HEAD_WEIGHTS)
    )
    assert decoded.shape == (50, 12)
    np.testing.assert_allclose(decoded[:, 4:8], proposals, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(decoded[:, 8:], reference, rtol=1e-5, atol=1e-3)


def test_box_coding_constants_and_errors():
    assert box_coding.DELTA_ORDER == ("dx", "dy", "dw", "dh")
    assert box_coding.BBOX_XFORM_CLIP == math.log(1000 / 16)
    boxes = np.array([[0.0, 0.0, 10.0, 20.0]], np.float32)
    with pytest.raises(ValueError, match="weights"):
        box_coding.decode(np.zeros((1, 4)), boxes, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        box_coding.encode(boxes, boxes, (1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="deltas"):
        box_coding.decode(np.zeros((1, 6)), boxes, box_coding.RPN_BOX_WEIGHTS)
    with pytest.raises(ValueError, match="boxes"):
        box_coding.decode(np.zeros((1, 4)), boxes[:, :3], box_coding.RPN_BOX_WEIGHTS)
    with pytest.raises(ValueError, match="proposals"):
        box_coding.encode(boxes, np.zeros((1, 5)), box_coding.RPN_BOX_WEIGHTS)
    with pytest.raises(ValueError, match="clip"):
        box_coding.decode(np.zeros((1, 4)), boxes, box_coding.RPN_BOX_WEIGHTS, clip="4")
    # Deltas are x-first: dx moves the box along x (axis 1 of [y1, x1, y2, x2]).
    moved = box_coding.decode(np.array([[0.5, 0, 0, 0]], np.float32), boxes, (1, 1, 1, 1))
    np.testing.assert_allclose(moved, [[0.0, 10.0, 10.0, 30.0]])


# --------------------------------------------------------------------------------------------
# RPN head
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_features(ref):
    values = maker.head_features()
    checksum = sum(v.astype(np.float64).sum() for v in values)
    np.testing.assert_allclose(checksum, ref["features_checksum"], rtol=0, atol=1e-6)
    return values


def test_rpn_head_matches_torchvision(ref, head_features):
    head = RPNHead(num_anchors=3, channels=256)
    rpn_head_weights_from_state_dict(maker.head_state_dict(), head)
    objectness, deltas = head(head_features)
    assert [tuple(o.shape) for o in objectness] == [f.shape[:3] + (3,) for f in head_features]
    assert [tuple(d.shape) for d in deltas] == [f.shape[:3] + (12,) for f in head_features]
    logits, flat = flatten_rpn_outputs(objectness, deltas)
    logits = keras.ops.convert_to_numpy(logits)
    flat = keras.ops.convert_to_numpy(flat)
    assert logits.shape == (2, int(ref["head_num_anchors"]))
    assert flat.shape == (2, int(ref["head_num_anchors"]), 4)
    rows = ref["head_rows"]
    assert _rel(logits[:, rows], ref["head_logits"]) <= 1e-4
    assert _rel(flat[:, rows], ref["head_deltas"]) <= 1e-4
    # Same length as the anchors of the padded batch, in the same order.
    anchors = anchor_lib.grid_anchors(maker.IMAGE_B, maker.feature_sizes(maker.IMAGE_B))
    assert anchors.shape[0] == logits.shape[1]


def test_rpn_head_legacy_names_and_weight_errors():
    state = maker.head_state_dict()
    legacy = {k.replace("conv.0.0.", "conv."): v for k, v in state.items()}
    feats = [np.random.default_rng(0).standard_normal((1, 4, 5, 256)).astype(np.float32)]
    a = rpn_head_weights_from_state_dict(state, RPNHead())
    b = rpn_head_weights_from_state_dict(legacy, RPNHead())
    np.testing.assert_array_equal(a(feats)[1][0], b(feats)[1][0])
    missing = {k: v for k, v in state.items() if "bbox_pred.bias" not in k}
    with pytest.raises(KeyError, match="bbox_pred.bias"):
        rpn_head_weights_from_state_dict(missing, RPNHead())
    with pytest.raises(ValueError, match="cls_logits"):
        rpn_head_weights_from_state_dict(state, RPNHead(num_anchors=4))
    with pytest.raises(KeyError, match=r"conv\.0\.0\.weight"):
        rpn_head_weights_from_state_dict(legacy, RPNHead(conv_depth=2))
    with pytest.raises(TypeError, match="layer"):
        rpn_head_weights_from_state_dict(state, keras.layers.Dense(3))


def test_rpn_head_serialization_and_errors(tmp_path):
    inputs = [keras.Input((None, None, 8)), keras.Input((None, None, 8))]
    objectness, deltas = RPNHead(num_anchors=2, channels=8, conv_depth=2)(inputs)
    logits, flat = flatten_rpn_outputs(objectness, deltas)
    model = keras.Model(inputs, {"logits": logits, "deltas": flat})
    feats = [
        np.random.default_rng(1).standard_normal((2, s, s + 1, 8)).astype(np.float32)
        for s in (6, 3)
    ]
    before = model.predict(feats, verbose=0)
    assert before["logits"].shape == (2, 2 * (6 * 7 + 3 * 4))
    path = tmp_path / "rpn.keras"
    model.save(path)
    after = keras.saving.load_model(path).predict(feats, verbose=0)
    np.testing.assert_array_equal(before["deltas"], after["deltas"])
    config = model.layers[2].get_config()
    assert (config["num_anchors"], config["channels"], config["conv_depth"]) == (2, 8, 2)

    with pytest.raises(ValueError, match="num_anchors"):
        RPNHead(num_anchors=0)
    with pytest.raises(ValueError, match="conv_depth"):
        RPNHead(conv_depth=1.5)
    with pytest.raises(ValueError, match="list of feature maps"):
        RPNHead()(np.zeros((1, 4, 4, 8), np.float32))
    with pytest.raises(ValueError, match="same, known number of channels"):
        RPNHead()([np.zeros((1, 4, 4, 8), np.float32), np.zeros((1, 2, 2, 4), np.float32)])
    with pytest.raises(ValueError, match="4 channels per objectness channel"):
        flatten_rpn_outputs([np.zeros((1, 2, 2, 3))], [np.zeros((1, 2, 2, 8))])
    with pytest.raises(ValueError, match="same number of levels"):
        flatten_rpn_outputs([np.zeros((1, 2, 2, 3))] * 2, [np.zeros((1, 2, 2, 12))])


# --------------------------------------------------------------------------------------------
# Proposal selection
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proposal_inputs(ref):
    anchors = anchor_lib.grid_anchors(maker.IMAGE_A, maker.feature_sizes(maker.IMAGE_A))
    logits, deltas = maker.proposal_inputs(anchors.shape[0])
    checksum = logits.astype(np.float64).sum() + deltas.astype(np.float64).sum()
    np.testing.assert_allclose(checksum, ref["proposal_inputs_checksum"], rtol=0, atol=1e-6)
    counts = anchor_lib.num_anchors_per_level(maker.feature_sizes(maker.IMAGE_A))
    sizes = np.array(maker.PROPOSAL_IMAGE_SIZES, np.int32)
    return logits, deltas, anchors, sizes, counts


def _assert_same_up_to_ties(boxes, scores, expected, atol=2e-3):
    """Row i of `expected` must be one of our rows with (nearly) the same score.

    Sigmoid scores near 1 tie in float32, and torchvision's and TF's NMS order equal scores
    differently; apart from such ties the order must be the same.
    """
    distance = np.abs(boxes[None, :, :] - expected[:, None, :]).max(axis=-1)  # (expected, ours)
    same_score = np.abs(scores[None, :] - scores[:, None]) <= 2e-7
    distance = np.where(same_score, distance, np.inf)
    np.testing.assert_array_less(distance.min(axis=1), atol)
    untied = same_score.sum(axis=1) == 1
    assert untied.mean() > 0.5  # the ties are the exception
    np.testing.assert_allclose(boxes[untied], expected[untied], rtol=0, atol=atol)


@pytest.mark.parametrize("config", [0, 1])
def test_select_proposals_matches_torchvision(ref, proposal_inputs, config):
    pre, post, nms_thresh, score_thresh = maker.PROPOSAL_CONFIGS[config]
    boxes, scores, valid = select_proposals(
        *proposal_inputs,
        pre_nms_top_n=pre,
        post_nms_top_n=post,
        nms_threshold=nms_thresh,
        score_threshold=score_thresh,
    )
    boxes, scores, valid = (keras.ops.convert_to_numpy(t) for t in (boxes, scores, valid))
    assert boxes.shape == (2, post, 4) and scores.shape == (2, post)
    counts = ref[f"proposals{config}_counts"]
    np.testing.assert_array_equal(valid, counts)
    expected_boxes = np.split(ref[f"proposals{config}_boxes"], np.cumsum(counts)[:-1])
    expected_scores = np.split(ref[f"proposals{config}_scores"], np.cumsum(counts)[:-1])
    for b in range(2):
        n = counts[b]
        np.testing.assert_allclose(scores[b, :n], expected_scores[b], rtol=0, atol=2e-7)
        _assert_same_up_to_ties(boxes[b, :n], scores[b, :n], expected_boxes[b])
        assert not boxes[b, n:].any() and not scores[b, n:].any()
        height, width = maker.PROPOSAL_IMAGE_SIZES[b]
        assert boxes[b, :n, 2].max() <= height and boxes[b, :n, 3].max() <= width


def test_select_proposals_in_graph_mode(ref, proposal_inputs):
    logits, deltas, anchors, sizes, counts = proposal_inputs
    pre, post, nms_thresh, score_thresh = maker.PROPOSAL_CONFIGS[1]

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None), tf.float32),
            tf.TensorSpec((None, None, 4), tf.float32),
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((None, 2), tf.int32),
            tf.TensorSpec((5,), tf.int32),
        ],
        autograph=False,
    )
    def run(logits, deltas, anchors, sizes, counts):
        return select_proposals(
            logits,
            deltas,
            anchors,
            sizes,
            [counts[i] for i in range(5)],
            pre_nms_top_n=pre,
            post_nms_top_n=post,
            nms_threshold=nms_thresh,
            score_threshold=score_thresh,
        )

    boxes, scores, valid = run(logits, deltas, anchors, sizes, tf.constant(counts))
    np.testing.assert_array_equal(valid.numpy(), ref["proposals1_counts"])
    _assert_same_up_to_ties(
        boxes.numpy().reshape(-1, 4), scores.numpy().reshape(-1), ref["proposals1_boxes"]
    )


def test_select_proposals_argument_errors(proposal_inputs):
    logits, deltas, anchors, sizes, counts = proposal_inputs
    with pytest.raises(ValueError, match="pre_nms_top_n"):
        select_proposals(logits, deltas, anchors, sizes, counts, pre_nms_top_n=0)
    with pytest.raises(ValueError, match="nms_threshold"):
        select_proposals(logits, deltas, anchors, sizes, counts, nms_threshold=1.5)
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        select_proposals(logits, deltas, anchors, sizes, counts[:-1])
    with pytest.raises(ValueError, match="deltas"):
        select_proposals(logits, deltas[..., :3], anchors, sizes, counts)
    with pytest.raises(ValueError, match="image_sizes"):
        select_proposals(logits, deltas, anchors, sizes[:, :1], counts)


def test_select_proposals_with_nothing_left(proposal_inputs):
    boxes, scores, valid = select_proposals(
        *proposal_inputs, pre_nms_top_n=10, post_nms_top_n=5, score_threshold=1.0
    )
    assert tuple(boxes.shape) == (2, 5, 4)
    np.testing.assert_array_equal(valid, [0, 0])
    assert not np.asarray(boxes).any() and not np.asarray(scores).any()
