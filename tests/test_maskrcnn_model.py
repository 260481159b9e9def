"""Mask R-CNN end to end against torchvision 0.29: same weights, same images, same detections.

torchvision's outputs are committed in tests/fixtures/maskrcnn/model_reference.npz, written by
make_model_reference.py beside it, which also rebuilds (numpy only) the two seeded images and
the seeded state dicts used here. v1 is `maskrcnn_resnet50_fpn` as built for its COCO
weights (frozen BN, eps 0), v2 `maskrcnn_resnet50_fpn_v2`; both at min_size 160 / max_size 256.

Besides the final detections the fixture holds intermediates (transform output, P2..P6,
RPN proposals, box-predictor logits), so a mismatch can be located stage by stage.
"""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasseg.convert.torchvision import maskrcnn_weights, torchvision_param_count
from kerasseg.models.maskrcnn import anchors as anchor_lib
from kerasseg.models.maskrcnn.model import maskrcnn
from kerasseg.models.maskrcnn.postprocess import paste_masks
from kerasseg.models.maskrcnn.rpn import flatten_rpn_outputs, select_proposals
from kerasseg.ops import detection as detection_ops

FIXTURES = Path(__file__).parent / "fixtures" / "maskrcnn"
SCORE_THRESHOLD = 0.05
LIMIT = 100  # detections per image
LEVELS = ("p2", "p3", "p4", "p5", "pool")
# Tolerances (measured maxima in the comments of each test).
BOX_TOL = 1e-3  # pixels
SCORE_TOL = 1e-4
MASK_TOL = 1e-3
TIE_TOL = 4e-5  # scores closer than this may come out in either order (2x the score noise)
FLIP_TOL = 1e-4  # a detection this close to the score threshold / the top-100 cut may flip


import make_model_reference as maker  # noqa: E402  (tests/fixtures/maskrcnn, on sys.path via conftest)

IMAGES = maker.make_images()


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "model_reference.npz") as data:
        return dict(data)


def _batch():
    height = max(im.shape[0] for im in IMAGES)
    width = max(im.shape[1] for im in IMAGES)
    batch = np.zeros((len(IMAGES), height, width, 3), np.float32)
    for i, image in enumerate(IMAGES):
        batch[i, : image.shape[0], : image.shape[1]] = image
    sizes = np.array([im.shape[:2] for im in IMAGES], np.int32)
    return batch, sizes


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def _build(config):
    model = maskrcnn(
        num_classes=91,
        min_size=maker.MIN_SIZE,
        max_size=maker.MAX_SIZE,
        version=1 if config == "v1" else 2,
    )
    weights = maker.make_weights(config)
    maskrcnn_weights(weights, model)
    batch, sizes = _batch()
    outputs = _numpy(model({"images": batch, "image_sizes": sizes}))
    return model, weights, outputs


@pytest.fixture(scope="module")
def v1():
    return _build("v1")


@pytest.fixture(scope="module")
def v2():
    return _build("v2")


def _detections(outputs, index):
    count = int(outputs["num_detections"][index])
    return {
        "boxes": outputs["boxes"][index, :count],
        "scores": outputs["scores"][index, :count],
        "labels": outputs["classes"][index, :count],
        "masks": outputs["masks"][index, :count],
    }


def _allowed_flips(ref, prefix):
    """torchvision detections whose presence may honestly differ: scores within FLIP_TOL of
    the 0.05 threshold, or of the best score the top-100 cap removed."""
    scores = ref[prefix + "scores"]
    flips = int(np.sum(np.abs(scores - SCORE_THRESHOLD) < FLIP_TOL))
    next_score = float(ref[prefix + "next_score"])
    if next_score >= 0:
        flips += int(np.sum(np.abs(scores - next_score) < FLIP_TOL))
    return flips


def _match(ours, ref, prefix):
    """Pair each torchvision detection with ours: same label, score within SCORE_TOL, box
    within 1 px (then the closest box). Returns the index pairs; asserts that at most the
    honest flips are unmatched and that the order agrees except among tied scores."""
    r_boxes, r_scores = ref[prefix + "boxes"], ref[prefix + "scores"]
    r_labels = ref[prefix + "labels"]
    flips = _allowed_flips(ref, prefix)
    assert abs(len(ours["scores"]) - len(r_scores)) <= flips, (
        f"{prefix}: {len(ours['scores'])} detections, torchvision {len(r_scores)} "
        f"({flips} near the threshold / cut)"
    )
    used, pairs, unmatched = set(), [], []
    for i in range(len(r_scores)):
        diff = np.max(np.abs(ours["boxes"] - r_boxes[i]), axis=-1) if len(ours["boxes"]) else []
        candidates = [
            j
            for j in range(len(ours["scores"]))
            if j not in used
            and ours["labels"][j] == r_labels[i]
            and abs(ours["scores"][j] - r_scores[i]) <= SCORE_TOL
            and diff[j] <= 1.0
        ]
        if not candidates:
            unmatched.append(i)
            continue
        j = min(candidates, key=lambda j: diff[j])
        used.add(j)
        pairs.append((i, j))
    near = [
        i
        for i in unmatched
        if abs(r_scores[i] - SCORE_THRESHOLD) < FLIP_TOL
        or abs(r_scores[i] - float(ref[prefix + "next_score"])) < FLIP_TOL
    ]
    assert unmatched == near, (
        f"{prefix}: torchvision detections {unmatched} (scores {r_scores[unmatched]}, labels "
        f"{r_labels[unmatched]}, boxes {r_boxes[unmatched]}) have no match in ours"
    )
    extra = [j for j in range(len(ours["scores"])) if j not in used]
    cut = [float(ref[prefix + "next_score"]), SCORE_THRESHOLD]
    assert all(min(abs(ours["scores"][j] - c) for c in cut) < FLIP_TOL for j in extra), (
        f"{prefix}: our detections {extra} (scores {ours['scores'][extra]}) are not torchvision's"
    )
    # Order: an inversion is only allowed between (near-)tied scores.
    for a, (i, j) in enumerate(pairs):
        for i2, j2 in pairs[a + 1 :]:
            if j2 < j:
                assert abs(r_scores[i] - r_scores[i2]) <= TIE_TOL, (
                    f"{prefix}: detections {i} and {i2} (scores {r_scores[i]}, {r_scores[i2]}) "
                    "come out in the opposite order"
                )
    return pairs, len(unmatched)


# --------------------------------------------------------------------------------------------
# Stage by stage (v1): where a mismatch starts
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1_stages(v1):
    model = v1[0]
    batch, sizes = _batch()
    padded, resized = model.get_layer("transform")(batch, sizes)
    features = model.get_layer("resnet50_fpn")(padded)
    if isinstance(features, dict):
        features = [features[f"P{level}"] for level in range(2, 7)]
    detector = model.get_layer("detector")
    objectness, deltas = flatten_rpn_outputs(*detector.rpn_head(features))
    feature_sizes = [tuple(f.shape[1:3]) for f in features]
    padded_size = tuple(padded.shape[1:3])
    proposals, _, valid = select_proposals(
        objectness,
        deltas,
        anchor_lib.grid_anchors(padded_size, feature_sizes),
        resized,
        anchor_lib.num_anchors_per_level(feature_sizes),
        pre_nms_top_n=detector.rpn_pre_nms_top_n,
        post_nms_top_n=detector.rpn_post_nms_top_n,
        nms_threshold=detector.rpn_nms_threshold,
        score_threshold=detector.rpn_score_threshold,
    )
    return {
        "padded": keras.ops.convert_to_numpy(padded),
        "resized": keras.ops.convert_to_numpy(resized),
        "features": features,
        "proposals": keras.ops.convert_to_numpy(proposals),
        "valid": keras.ops.convert_to_numpy(valid),
        "detector": detector,
    }


def test_transform_matches_torchvision(ref, v1_stages):
    np.testing.assert_array_equal(v1_stages["resized"], ref["v1_resized_sizes"])
    np.testing.assert_array_equal(v1_stages["resized"], [[160, 200], [160, 213]])
    np.testing.assert_array_equal(v1_stages["padded"].shape[1:3], ref["v1_padded_size"])
    stride = maker.BATCH_STRIDE
    got = v1_stages["padded"][:, ::stride, ::stride]
    # Measured max |diff| 4.8e-7 (normalised units, values up to ~2.6).
    np.testing.assert_allclose(got, ref["batch_sub"], rtol=0, atol=1e-4)


def test_backbone_features_match_torchvision(ref, v1_stages):
    stride = maker.FEATURE_CHANNEL_STRIDE
    for level, feature in zip(LEVELS, v1_stages["features"], strict=True):
        expected = ref[f"v1_features_{level}"]
        got = keras.ops.convert_to_numpy(feature)[..., ::stride]
        assert got.shape == expected.shape, level
        rel = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
        assert rel < 1e-4, f"{level}: relative max diff {rel:.2e}"  # measured <= 2.2e-6


def test_rpn_proposals_match_torchvision(ref, v1_stages):
    for i in range(len(IMAGES)):
        count = int(v1_stages["valid"][i])
        assert count == int(ref[f"v1_img{i}_num_proposals"])
        expected = ref[f"v1_img{i}_proposals"]
        got = v1_stages["proposals"][i, : len(expected)]
        # Measured max |diff| 2.7e-4 px over the first 50 proposals.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_box_head_logits_match_torchvision(ref, v1_stages):
    """Box head on torchvision's own first 50 proposals: RoIAlign + fc6/fc7 + predictor."""
    detector = v1_stages["detector"]
    levels = list(v1_stages["features"][:4])
    padded_size = v1_stages["padded"].shape[1:3]
    for i in range(len(IMAGES)):
        rois = tf.constant(ref[f"v1_img{i}_proposals"])
        pooled = detection_ops.multiscale_roi_align(
            levels, rois, tf.fill([len(rois)], i), padded_size, 7, sampling_ratio=2
        )
        logits, _ = detector.box_predictor(detector.box_head(pooled))
        expected = ref[f"v1_img{i}_proposal_logits"]
        diff = np.max(np.abs(keras.ops.convert_to_numpy(logits) - expected))
        # Measured 2.7e-5 on logits up to 27.
        assert diff < 1e-4 * max(1.0, np.max(np.abs(expected))), f"image {i}: {diff:.2e}"


# --------------------------------------------------------------------------------------------
# Final detections, v1 and v2
# --------------------------------------------------------------------------------------------


def _check_detections(config, outputs, ref):
    report = {}
    for i, image in enumerate(IMAGES):
        prefix = f"{config}_img{i}_"
        ours = _detections(outputs, i)
        pairs, unmatched = _match(ours, ref, prefix)
        r = np.array([p[0] for p in pairs])
        o = np.array([p[1] for p in pairs])
        box_diff = np.max(np.abs(ours["boxes"][o] - ref[prefix + "boxes"][r]))
        score_diff = np.max(np.abs(ours["scores"][o] - ref[prefix + "scores"][r]))
        stored = len(ref[prefix + "masks28"])
        keep = r < stored
        mask_diff = np.max(np.abs(ours["masks"][o[keep]] - ref[prefix + "masks28"][r[keep]]))
        assert box_diff <= BOX_TOL, f"{prefix}: boxes differ by {box_diff:.2e} px"
        assert score_diff <= SCORE_TOL, f"{prefix}: scores differ by {score_diff:.2e}"
        assert mask_diff <= MASK_TOL, f"{prefix}: 28x28 masks differ by {mask_diff:.2e}"

        # Pasted full-size masks, thresholded at 0.5 as COCO evaluation does.
        height, width = image.shape[:2]
        pasted = keras.ops.convert_to_numpy(
            paste_masks(ours["masks"][o], ours["boxes"][o], height, width)
        )
        count = len(ref[prefix + "scores"])
        bits = np.unpackbits(ref[prefix + "pasted_bits"])[: count * height * width]
        expected = bits.reshape(count, height, width).astype(bool)[r]
        wrong = int(np.sum((pasted > 0.5) != expected))
        assert wrong <= max(10, expected.size // 100000), f"{prefix}: {wrong} pixels differ"
        first = r < maker.PASTED_PROB
        s = maker.PASTED_STRIDE
        prob_diff = np.max(
            np.abs(pasted[first][:, ::s, ::s] - ref[prefix + "pasted_sub"][r[first]])
        )
        assert prob_diff <= MASK_TOL, f"{prefix}: pasted probabilities differ by {prob_diff:.2e}"
        report[i] = (len(pairs), unmatched, box_diff, score_diff, mask_diff, wrong, prob_diff)
    return report


def test_v1_detections_match_torchvision(ref, v1):
    # Measured (image 0: 100 of 183 candidates, image 1: 23): boxes <= 1.8e-4 px, scores
    # <= 1.4e-5, 28x28 masks <= 3.5e-5, pasted masks > 0.5 identical (0 pixels differ),
    # pasted probabilities <= 8e-6.
    report = _check_detections("v1", v1[2], ref)
    assert [report[i][0] for i in report] == [100, 23]


@pytest.mark.slow
def test_v2_detections_match_torchvision(ref, v2):
    # Measured (image 0: 100 of 169 candidates, image 1: 52): boxes <= 2.2e-4 px, scores
    # <= 1.8e-5, 28x28 masks <= 3.3e-5, pasted masks identical, pasted probabilities <= 1.5e-5.
    report = _check_detections("v2", v2[2], ref)
    assert [report[i][0] for i in report] == [100, 52]


def test_detections_are_substantial(ref, v1):
    """The fixture exercises the cap, the threshold, several classes and masks."""
    outputs = v1[2]
    np.testing.assert_array_equal(outputs["num_detections"], [100, 23])
    assert ref["v1_img0_candidates"] > LIMIT  # the top-100 cut is exercised
    assert len(np.unique(outputs["classes"][0, :100])) >= 5
    assert outputs["scores"][0, 0] > 0.9
    assert np.all(outputs["scores"][1, 23:] == 0) and np.all(outputs["masks"][1, 23:] == 0)
    assert 0.01 < np.mean(outputs["masks"][0, :100] > 0.5) < 0.99


def test_each_image_alone_gives_the_batch_detections(v1):
    model, _, outputs = v1
    # Image 1 padded inside a larger canvas with its size given; image 0 with no sizes.
    height, width = IMAGES[1].shape[:2]
    canvas = np.zeros((1, height + 13, width + 7, 3), np.uint8)
    canvas[0, :height, :width] = IMAGES[1]
    alone = [
        _numpy(model({"images": IMAGES[0][None].astype(np.float32), "image_sizes": None})),
        _numpy(model({"images": canvas, "image_sizes": np.array([[height, width]], np.int32)})),
    ]
    for i, single in enumerate(alone):
        got, expected = _detections(single, 0), _detections(outputs, i)
        assert len(got["scores"]) == len(expected["scores"]), i
        np.testing.assert_array_equal(got["labels"], expected["labels"])
        # Measured: boxes 1e-4 px, scores 6.3e-6, masks 1e-5 (float noise of batch size 1 vs 2).
        np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=BOX_TOL)
        np.testing.assert_allclose(got["scores"], expected["scores"], atol=SCORE_TOL)
        np.testing.assert_allclose(got["masks"], expected["masks"], atol=MASK_TOL)


# --------------------------------------------------------------------------------------------
# Converter and parameter count
# --------------------------------------------------------------------------------------------


def test_param_count_v1_matches_torchvision(v1):
    assert torchvision_param_count(v1[0]) == 44_401_393  # published COCO_V1 num_params


@pytest.mark.slow
def test_param_count_v2_matches_torchvision(v2):
    assert torchvision_param_count(v2[0]) == 46_359_409


def test_fixture_keys_match_the_model(v1):
    """The json key table is torchvision's state dict; the converter consumed all of it."""
    shapes = maker.load_shapes("v1")
    assert len(shapes) == 307  # FrozenBN: 4 buffers per norm, no num_batches_tracked
    assert set(shapes) == set(v1[1])


def test_converter_rejects_missing_key(v1):
    model, weights, _ = v1
    for key in (
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
        "backbone.body.layer3.2.bn2.weight",
    ):
        broken = {k: v for k, v in weights.items() if k != key}
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            maskrcnn_weights(broken, model)


def test_converter_rejects_unexpected_key(v1):
    model, weights, _ = v1
    for key in ("roi_heads.box_head.fc8.weight", "rpn.head.extra.bias", "transform.mean"):
        extra = dict(weights)
        extra[key] = np.zeros((3,), np.float32)
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            maskrcnn_weights(extra, model)


def test_refused_state_dict_leaves_model_unchanged(v1):
    """`maskrcnn_weights` documents that keys are checked before anything is assigned."""
    model, weights, _ = v1
    expected = [np.array(w) for w in model.get_weights()]
    cases = {
        "missing head key": {
            k: v for k, v in weights.items() if k != "roi_heads.mask_predictor.mask_fcn_logits.bias"
        },
        "missing RPN key": {k: v for k, v in weights.items() if k != "rpn.head.cls_logits.bias"},
        "unexpected head key": {**weights, "roi_heads.box_head.fc8.weight": np.zeros(3)},
    }
    try:
        for case, state_dict in cases.items():
            scrambled = [np.full_like(w, 0.5) for w in expected]
            model.set_weights(scrambled)
            with pytest.raises(ValueError):
                maskrcnn_weights(state_dict, model)
            changed = [
                w.path
                for w, now, before in zip(
                    model.weights, model.get_weights(), scrambled, strict=True
                )
                if not np.array_equal(now, before)
            ]
            assert not changed, f"{case}: {len(changed)} variables assigned, e.g. {changed[:3]}"
    finally:
        model.set_weights(expected)


def _legacy(weights):
    out = {}
    for key, value in weights.items():
        new = key
        for kind in ("inner", "layer"):
            for i in range(4):
                new = new.replace(f"fpn.{kind}_blocks.{i}.0.", f"fpn.{kind}_blocks.{i}.")
        new = new.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for k in range(4):
            new = new.replace(
                f"roi_heads.mask_head.{k}.0.", f"roi_heads.mask_head.mask_fcn{k + 1}."
            )
        out[new] = value
    return out


def test_legacy_keys_load_identically(v1):
    model, weights, _ = v1
    legacy = _legacy(weights)
    renamed = set(legacy) - set(weights)
    assert len(renamed) == 8 + 8 + 2 + 8
    expected = [np.array(w) for w in model.get_weights()]
    try:
        # Scramble every weight, then load the legacy spelling: all must come back exactly.
        model.set_weights([np.full_like(w, 0.5) for w in expected])
        maskrcnn_weights(legacy, model)
        for got, want in zip(model.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        # torch BatchNorm2d checkpoints also carry num_batches_tracked: consumed, ignored.
        counters = {
            k.rsplit(".", 1)[0] + ".num_batches_tracked": np.array(0, np.int64)
            for k in weights
            if k.endswith(".running_var")
        }
        assert len(counters) == 53
        model.set_weights([np.full_like(w, 0.5) for w in expected])
        maskrcnn_weights({**weights, **counters}, model)
        for got, want in zip(model.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    finally:
        model.set_weights(expected)


@pytest.mark.parametrize("version", [1, 2])
def test_box_representation_size_sets_the_box_head_width(version):
    """torchvision's `representation_size`: only the box head's FC layers and the predictor's
    input change; the parameter difference is counted by hand from their shapes."""

    def detector(size):
        model = maskrcnn(
            num_classes=2,
            backbone="resnet18",
            version=version,
            **({} if size is None else {"box_representation_size": size}),
        )
        return model.get_layer("detector")

    default, light = detector(None), detector(256)
    assert default.box_representation_size == 1024
    assert light.get_config()["box_representation_size"] == 256
    flat = 7 * 7 * 256  # RoIAlign output of 256 channels, flattened
    predictor = 2 + 2 * 4  # class logits and per-class deltas of 2 classes, per input unit

    def head(r):
        fc = (flat + 1) * r + ((r + 1) * r if version == 1 else 0)  # v1 has fc6 and fc7
        return fc + r * predictor

    assert default.count_params() - light.count_params() == head(1024) - head(256)
    with pytest.raises(ValueError, match="`box_representation_size` must be a positive"):
        maskrcnn(num_classes=2, backbone="resnet18", box_representation_size=0)


def test_registered_arguments_follow_the_builder():
    """`kerasseg.models.maskrcnn.ARGUMENTS` (what the registry lets a variant take) is the
    builder's keywords but `backbone` and `version` (fixed by the variant), then the
    `**training_options` its docstring lists, which the detector layer all accepts."""
    import inspect
    import re

    import kerasseg.models.maskrcnn as package
    from kerasseg.models.maskrcnn.model import MaskRCNNDetector

    parameters = inspect.signature(maskrcnn).parameters.values()
    keywords = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in ("backbone", "version")
    ]
    entry = maskrcnn.__doc__.split("**training_options:", 1)[1].split("\n\n", 1)[0]
    training = re.findall(r"`(\w+)`", entry)
    assert training and len(set(training)) == len(training)
    assert package.ARGUMENTS == tuple(keywords + training)
    assert set(training) <= set(inspect.signature(MaskRCNNDetector).parameters)
