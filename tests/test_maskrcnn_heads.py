"""Mask R-CNN box/mask heads and post-processing against torchvision 0.29.1.

The fixture `tests/fixtures/maskrcnn/heads_reference.npz` holds torchvision's outputs; weights
and inputs are regenerated here from the seeds of `make_heads_reference.py` (no torch needed).
"""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.models.maskrcnn import heads, postprocess

FIXTURES = Path(__file__).parent / "fixtures" / "maskrcnn"

import make_heads_reference as ref  # noqa: E402
from reference_weights import make_state_dict  # noqa: E402

HEAD_RTOL = 1e-4  # max |ours - torch| / max |torch|; measured <= 2.2e-6
PASTE_ATOL = 1e-5  # measured <= 8.3e-7


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURES / "heads_reference.npz"))


@pytest.fixture(scope="module")
def v1_state_dict():
    return make_state_dict(ref.v1_shapes(), ref.SEED_V1)


@pytest.fixture(scope="module")
def v1_layers(v1_state_dict):
    layers = {
        "box_head": heads.BoxHead(),
        "box_predictor": heads.BoxPredictor(),
        "mask_head": heads.MaskHead(),
        "mask_predictor": heads.MaskPredictor(),
    }
    used = heads.heads_weights_from_state_dict(v1_state_dict, layers)
    assert sorted(used) == sorted(v1_state_dict)
    return layers


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def relative(ours, theirs):
    ours = keras.ops.convert_to_numpy(ours)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


# ---------------------------------------------------------------------------------------------
# Heads


def test_v1_box_head_and_predictor_match_torchvision(v1_layers, reference):
    features = v1_layers["box_head"](nhwc(ref.box_features()))
    logits, deltas = v1_layers["box_predictor"](features)
    assert tuple(features.shape) == (ref.BOX_ROIS, 1024)
    assert tuple(logits.shape) == (ref.BOX_ROIS, 91)
    assert tuple(deltas.shape) == (ref.BOX_ROIS, 364)
    assert relative(features, reference["v1_box_head"]) < HEAD_RTOL
    assert relative(logits, reference["v1_class_logits"]) < HEAD_RTOL
    assert relative(deltas, reference["v1_box_regression"]) < HEAD_RTOL


def test_v1_mask_head_and_predictor_match_torchvision(v1_layers, reference):
    features = v1_layers["mask_head"](nhwc(ref.mask_features()))
    logits = v1_layers["mask_predictor"](features)
    assert tuple(features.shape) == (ref.MASK_ROIS, 14, 14, 256)
    assert tuple(logits.shape) == (ref.MASK_ROIS, 28, 28, 91)
    features = keras.ops.convert_to_numpy(features)[..., ref.MASK_CHANNELS]
    logits = keras.ops.convert_to_numpy(logits)[..., ref.MASK_CLASSES]
    assert relative(features, reference["v1_mask_head"]) < HEAD_RTOL
    assert relative(logits, reference["v1_mask_logits"]) < HEAD_RTOL


def test_fc6_needs_the_chw_to_hwc_reorder(v1_state_dict, reference):
    """Trap 6: a plain transpose of fc6 (ignoring the NCHW flatten order) is far off."""
    head = heads.BoxHead()
    heads.heads_weights_from_state_dict(v1_state_dict, {"box_head": head})
    head.fc6.kernel.assign(v1_state_dict["roi_heads.box_head.fc6.weight"].T)
    assert relative(head(nhwc(ref.box_features())), reference["v1_box_head"]) > 0.1


def test_v2_heads_match_torchvision(reference):
    state_dict = make_state_dict(ref.v2_shapes(), ref.SEED_V2)
    layers = {"box_head": heads.ConvBoxHead(), "mask_head": heads.MaskHead(norm=True)}
    used = heads.heads_weights_from_state_dict(state_dict, layers)
    assert sorted(used) == sorted(state_dict)  # num_batches_tracked included
    box = layers["box_head"](nhwc(ref.box_features()))
    mask = keras.ops.convert_to_numpy(layers["mask_head"](nhwc(ref.mask_features())))
    assert relative(box, reference["v2_box_head"]) < HEAD_RTOL
    assert relative(mask[..., ref.MASK_CHANNELS], reference["v2_mask_head"]) < HEAD_RTOL


def test_legacy_mask_head_names_load_the_same_weights(v1_state_dict, v1_layers):
    legacy = {}
    for key, value in v1_state_dict.items():
        if key.startswith("roi_heads.mask_head."):
            index, _, leaf = key[len("roi_heads.mask_head.") :].split(".")
            key = f"roi_heads.mask_head.mask_fcn{int(index) + 1}.{leaf}"
        legacy[key] = value
    head = heads.MaskHead()
    used = heads.heads_weights_from_state_dict(legacy, {"mask_head": head})
    assert sorted(used) == sorted(k for k in legacy if k.startswith("roi_heads.mask_head."))
    assert "roi_heads.mask_head.mask_fcn4.bias" in used
    for ours, theirs in zip(head.weights, v1_layers["mask_head"].weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_converter_prefix_and_prebuilt_layers(v1_state_dict, v1_layers):
    renamed = {k.replace("roi_heads.", "heads."): v for k, v in v1_state_dict.items()}
    predictor = heads.BoxPredictor()
    predictor.build((None, 1024))
    used = heads.heads_weights_from_state_dict(renamed, {"box_predictor": predictor}, "heads.")
    assert used == [
        "heads.box_predictor.cls_score.weight",
        "heads.box_predictor.cls_score.bias",
        "heads.box_predictor.bbox_pred.weight",
        "heads.box_predictor.bbox_pred.bias",
    ]
    np.testing.assert_array_equal(
        predictor.bbox_pred.kernel.numpy(), v1_layers["box_predictor"].bbox_pred.kernel.numpy()
    )


def test_converter_errors(v1_state_dict):
    with pytest.raises(ValueError, match="no key 'roi_heads.box_predictor.cls_score.weight'"):
        heads.heads_weights_from_state_dict({}, {"box_predictor": heads.BoxPredictor()})
    small = heads.BoxPredictor(num_classes=3)
    with pytest.raises(ValueError, match="cls_score.weight.*has shape"):
        heads.heads_weights_from_state_dict(v1_state_dict, {"box_predictor": small})
    with pytest.raises(ValueError, match="unknown entry 'rpn'"):
        heads.heads_weights_from_state_dict(v1_state_dict, {"rpn": heads.BoxHead()})
    with pytest.raises(TypeError, match="must be a BoxPredictor"):
        heads.heads_weights_from_state_dict(v1_state_dict, {"box_predictor": heads.BoxHead()})
    with pytest.raises(TypeError, match="`layers` must be a dict"):
        heads.heads_weights_from_state_dict(v1_state_dict, [heads.BoxHead()])
    with pytest.raises(TypeError, match="`state_dict` must be a mapping"):
        heads.heads_weights_from_state_dict([1, 2], {"box_head": heads.BoxHead()})


def test_layer_argument_and_input_errors():
    with pytest.raises(ValueError, match="representation_size"):
        heads.BoxHead(representation_size=0)
    with pytest.raises(ValueError, match="num_classes"):
        heads.BoxPredictor(num_classes=2.5)
    with pytest.raises(TypeError, match="`norm` must be a bool"):
        heads.MaskHead(norm="batch")
    with pytest.raises(ValueError, match="`channels` must not be empty"):
        heads.MaskHead(channels=())
    with pytest.raises(ValueError, match="epsilon"):
        heads.ConvBoxHead(epsilon=-1.0)
    with pytest.raises(ValueError, match=r"BoxHead: the input must have shape \(N, height"):
        heads.BoxHead()(np.zeros((2, 49, 256), "float32"))
    with pytest.raises(ValueError, match=r"BoxPredictor: the input must have shape \(N, features"):
        heads.BoxPredictor()(np.zeros((2, 1, 1, 8), "float32"))


def test_heads_serialize_in_a_saved_model(tmp_path):
    rois = keras.Input((7, 7, 8), name="box_rois")
    mask_rois = keras.Input((14, 14, 8), name="mask_rois")
    logits, deltas = heads.BoxPredictor(3, name="box_predictor")(
        heads.BoxHead(16, name="box_head")(rois)
    )
    v2 = heads.ConvBoxHead((4, 4), (6,), name="box_head_v2")(rois)
    masks = heads.MaskPredictor(3, 5, name="mask_predictor")(
        heads.MaskHead((4, 4), norm=True, name="mask_head")(mask_rois)
    )
    model = keras.Model([rois, mask_rois], [logits, deltas, v2, masks])
    assert model.output_shape == [(None, 3), (None, 12), (None, 6), (None, 28, 28, 3)]
    path = tmp_path / "heads.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = [
        np.random.default_rng(0).normal(size=s).astype("float32")
        for s in ((2, 7, 7, 8), (2, 14, 14, 8))
    ]
    for ours, theirs in zip(
        model.predict(inputs, verbose=0), loaded.predict(inputs, verbose=0), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    config = loaded.get_layer("mask_head").get_config()
    assert config["channels"] == [4, 4] and config["norm"] is True


# ---------------------------------------------------------------------------------------------
# Mask pasting


def test_expanded_boxes_truncate_like_torch(reference):
    _, boxes = ref.small_paste_inputs()
    expanded = postprocess._expand_boxes(ref.xyxy_to_yxyx(boxes), 30 / 28, 30 / 28)
    np.testing.assert_array_equal(expanded.numpy(), reference["small_expanded_boxes"])
    assert (reference["small_expanded_boxes"] < 0).any()  # truncation toward zero is exercised


@pytest.mark.parametrize("padding", [1, 2])
def test_paste_masks_match_torchvision(reference, padding):
    masks, boxes = ref.small_paste_inputs()
    key = "small_pasted" if padding == 1 else "small_pasted_padding2"
    pasted = postprocess.paste_masks(masks, ref.xyxy_to_yxyx(boxes), 60, 80, padding=padding)
    pasted = pasted.numpy()
    assert pasted.shape == (len(masks), 60, 80) and pasted.dtype == np.float32
    assert np.max(np.abs(pasted - reference[key])) <= PASTE_ATOL
    np.testing.assert_array_equal(pasted > 0.5, reference[key] > 0.5)
    # where torchvision pasted nothing (outside the expanded boxes), nothing is pasted here
    np.testing.assert_array_equal(pasted == 0, reference[key] == 0)


def test_paste_masks_large_canvas_matches_torchvision(reference):
    masks, boxes = ref.large_paste_inputs()
    pasted = postprocess.paste_masks(masks, ref.xyxy_to_yxyx(boxes), 300, 400).numpy()
    step = ref.LARGE_STRIDE
    assert np.max(np.abs(pasted[:, ::step, ::step] - reference["large_pasted_sub"])) <= PASTE_ATOL
    np.testing.assert_array_equal(
        np.packbits(pasted > 0.5, axis=-1), reference["large_pasted_bits"]
    )
    np.testing.assert_allclose(pasted.sum(axis=(1, 2)), reference["large_pasted_sum"], rtol=1e-6)


def test_paste_masks_batch_axes_empty_and_graph_mode():
    masks, boxes = ref.small_paste_inputs()
    boxes = ref.xyxy_to_yxyx(boxes)
    single = postprocess.paste_masks(masks, boxes, 60, 80).numpy()
    batched = postprocess.paste_masks(masks.reshape(2, 13, 28, 28), boxes.reshape(2, 13, 4), 60, 80)
    np.testing.assert_array_equal(batched.numpy().reshape(26, 60, 80), single)

    empty = postprocess.paste_masks(np.zeros((0, 28, 28), "float32"), np.zeros((0, 4)), 60, 80)
    assert tuple(empty.shape) == (0, 60, 80)

    far = [[70.0, 10.0, 90.0, 30.0], [10.0, -40.0, 30.0, -5.0]]  # below / left of the canvas
    outside = postprocess.paste_masks(np.ones((2, 28, 28), "float32"), far, 60, 80)
    assert not np.any(outside.numpy())

    @tf.function(
        autograph=False,
        input_signature=[
            tf.TensorSpec((None, 28, 28), tf.float32),
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.int32),
        ],
    )
    def graph(m, b, h, w):
        return postprocess.paste_masks(m, b, h, w)

    np.testing.assert_array_equal(graph(masks, boxes, 60, 80).numpy(), single)


def test_paste_masks_argument_errors():
    masks = np.zeros((2, 28, 28), "float32")
    boxes = np.zeros((2, 4), "float32")
    with pytest.raises(ValueError, match="`masks` must have shape"):
        postprocess.paste_masks(masks[0], boxes, 60, 80)
    with pytest.raises(ValueError, match="`boxes` must have shape"):
        postprocess.paste_masks(masks, boxes[:, :3], 60, 80)
    with pytest.raises(ValueError, match="share their leading axes"):
        postprocess.paste_masks(masks, boxes[:1], 60, 80)
    with pytest.raises(TypeError, match="`masks` dtype"):
        postprocess.paste_masks(masks.astype("uint8"), boxes, 60, 80)
    with pytest.raises(ValueError, match="`image_height` must be a positive integer"):
        postprocess.paste_masks(masks, boxes, 0, 80)
    with pytest.raises(TypeError, match="`image_width` must be a positive integer"):
        postprocess.paste_masks(masks, boxes, 60, 80.0)
    with pytest.raises(ValueError, match="`padding`"):
        postprocess.paste_masks(masks, boxes, 60, 80, padding=-1)


# ---------------------------------------------------------------------------------------------
# Boxes and detections


def test_rescale_boxes_matches_torchvision(reference):
    for i, ((resized, original), boxes) in enumerate(
        zip(ref.RESIZES, ref.resize_inputs(), strict=True)
    ):
        ours = postprocess.rescale_boxes(ref.xyxy_to_yxyx(boxes), resized, original)
        np.testing.assert_array_equal(ours.numpy(), reference[f"resized_boxes_{i}"])
    # one size per image for a (B, N, 4) batch
    boxes = np.stack([ref.xyxy_to_yxyx(b) for b in ref.resize_inputs()])
    ours = postprocess.rescale_boxes(
        boxes, np.array([r for r, _ in ref.RESIZES]), np.array([o for _, o in ref.RESIZES])
    )
    np.testing.assert_array_equal(ours.numpy()[1], reference["resized_boxes_1"])


def test_rescale_boxes_errors():
    with pytest.raises(ValueError, match="`resized_size` must be \\(height, width\\)"):
        postprocess.rescale_boxes(np.zeros((1, 4)), (0, 10), (5, 5))
    with pytest.raises(ValueError, match="`boxes` must have shape"):
        postprocess.rescale_boxes(np.zeros((1, 5)), (10, 10), (5, 5))
    with pytest.raises(ValueError, match="one size per image"):
        postprocess.rescale_boxes(np.zeros((4,)), np.array([[10, 10]]), np.array([[5, 5]]))


@pytest.mark.parametrize("name,top", [("detections", 100), ("detections_top10", 10)])
def test_detections_match_torchvision(reference, name, top):
    logits, deltas, proposals = ref.detection_inputs()
    boxes, scores, labels = postprocess.detections_from_head_outputs(
        logits,
        deltas,
        ref.xyxy_to_yxyx(proposals),
        *ref.DETECTION_CANVAS,
        detections_per_image=top,
    )
    np.testing.assert_array_equal(labels.numpy(), reference[f"{name}_labels"])
    np.testing.assert_allclose(scores.numpy(), reference[f"{name}_scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes.numpy(), reference[f"{name}_boxes"], rtol=0, atol=1e-4)


def test_detection_fixture_exercises_nms_clipping_and_small_boxes(reference):
    logits, _, proposals = ref.detection_inputs()
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    above = exp[:, 1:] / exp.sum(axis=1, keepdims=True) > 0.05
    small = (proposals[:, 2] - proposals[:, 0]) < 0.01
    assert above[small].any()  # some candidates are dropped as small boxes
    assert above.sum() - above[small].sum() > len(reference["detections_labels"])  # NMS drops
    boxes = reference["detections_boxes"]
    assert (boxes[:, [0, 2]] == 60).any() and (boxes[:, [1, 3]] == 80).any()  # clipped


def test_detections_argument_errors():
    logits, deltas, proposals = ref.detection_inputs()
    call = postprocess.detections_from_head_outputs
    with pytest.raises(ValueError, match="`box_regression` must have shape"):
        call(logits, deltas[:, :-4], proposals, 60, 80)
    with pytest.raises(ValueError, match="same number of rows"):
        call(logits, deltas, proposals[:-1], 60, 80)
    with pytest.raises(ValueError, match="`score_threshold`"):
        call(logits, deltas, proposals, 60, 80, score_threshold=1.5)
    with pytest.raises(ValueError, match="`detections_per_image`"):
        call(logits, deltas, proposals, 60, 80, detections_per_image=0)
    with pytest.raises(ValueError, match="`class_logits` needs at least 2 classes"):
        call(logits[:, :1], deltas[:, :4], proposals, 60, 80)


def test_detections_in_graph_mode_and_when_nothing_scores(reference):
    logits, deltas, proposals = ref.detection_inputs()
    spec = [
        tf.TensorSpec((None, 91), tf.float32),
        tf.TensorSpec((None, 364), tf.float32),
        tf.TensorSpec((None, 4), tf.float32),
    ]

    @tf.function(autograph=False, input_signature=spec)
    def graph(class_logits, box_regression, boxes):
        return postprocess.detections_from_head_outputs(
            class_logits, box_regression, boxes, tf.constant(60), tf.constant(80)
        )

    _, _, labels = graph(logits, deltas, ref.xyxy_to_yxyx(proposals))
    np.testing.assert_array_equal(labels.numpy(), reference["detections_labels"])
    # uniform scores 1/91 < 0.05: no detections, empty outputs with the right shapes
    boxes, scores, labels = postprocess.detections_from_head_outputs(
        logits * 0, deltas, ref.xyxy_to_yxyx(proposals), 60, 80
    )
    assert (tuple(boxes.shape), tuple(scores.shape), tuple(labels.shape)) == ((0, 4), (0,), (0,))
    assert labels.dtype == tf.int32
