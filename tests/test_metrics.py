"""kerasseg.metrics against scikit-learn (CamVid masks) and scikit-image (ISBI 2012 labels)."""

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from kerasseg import metrics as M

skimage_measure = pytest.importorskip("skimage.measure")
skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_morphology = pytest.importorskip("skimage.morphology")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

VOID = 11


def value(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def camvid(data_dir):
    """Six real CamVid annotations and a synthetic perturbed prediction.

    Truth: class 10 relabelled void (so it occurs only in the prediction) and class 6 void
    (it occurs nowhere). Prediction: truth shifted by 3 columns, void -> random class, 10% of
    pixels random, class 6 never predicted, class 9 (pedestrian) predicted as 1.
    """
    files = sorted((data_dir / "camvid" / "trainannot").glob("*.png"))[:6]
    true = np.stack([np.asarray(Image.open(f)) for f in files]).astype("int32")
    assert true.shape == (6, 360, 480) and true.max() == VOID
    rng = np.random.default_rng(0)
    true[(true == 10) | (true == 6)] = VOID
    pred = np.roll(true, 3, axis=2)
    pred = np.where(pred == VOID, rng.integers(0, 11, size=pred.shape), pred)
    noise = rng.random(pred.shape) < 0.1
    pred[noise] = rng.integers(0, 11, size=int(noise.sum()))
    pred[pred == 6] = 0
    pred[pred == 9] = 1
    return true, pred


def isbi_label(data_dir, index):
    path = data_dir / "isbi2012-membrane" / "train" / "label" / f"{index:02d}.png"
    label = np.asarray(Image.open(path))
    assert set(np.unique(label)) == {0, 255}
    return label == 255  # cell interior


def perturbed_foreground(foreground, seed):
    """Erode the cell interiors, flip 1% of pixels and cut a few straight lines: splits,
    merges (through flipped membrane pixels) and predicted zeros inside true cells."""
    rng = np.random.default_rng(seed)
    eroded = skimage_morphology.erosion(foreground, skimage_morphology.disk(1))
    noise = rng.random(foreground.shape) < 0.01
    out = eroded ^ noise
    for row in rng.integers(0, foreground.shape[0], size=3):
        out[row] = False
    return out


@pytest.fixture(scope="module")
def isbi(data_dir):
    true_fg = np.stack([isbi_label(data_dir, i) for i in range(4)])
    pred_fg = np.stack([perturbed_foreground(fg, seed) for seed, fg in enumerate(true_fg)])
    return true_fg, pred_fg


def label4(mask):
    return skimage_measure.label(mask, connectivity=1)


# ----------------------------------------------------------------------------- confusion based


def test_confusion_matrix_matches_sklearn(camvid):
    true, pred = camvid
    cm = value(M.confusion_matrix(true, pred, 11, ignore_label=VOID))
    valid = true != VOID
    expected = sklearn_metrics.confusion_matrix(true[valid], pred[valid], labels=range(11))
    np.testing.assert_array_equal(cm, expected)
    weights = np.random.default_rng(1).random(true.shape).astype("float32")
    cm = value(M.confusion_matrix(true, pred, 11, ignore_label=VOID, sample_weight=weights))
    expected = sklearn_metrics.confusion_matrix(
        true[valid], pred[valid], labels=range(11), sample_weight=weights[valid]
    )
    np.testing.assert_allclose(cm, expected, rtol=1e-4)


@pytest.mark.parametrize("as_labels", [False, True])
def test_mean_iou_dice_accuracy_match_sklearn_on_camvid(camvid, as_labels):
    true, pred = camvid
    valid = true != VOID
    t, p = true[valid], pred[valid]
    present = np.union1d(np.unique(t), np.unique(p))
    assert 10 in present and 10 not in np.unique(t)  # predicted-only class counts
    assert 6 not in present  # absent from both: left out of the mean

    common = {"ignore_label": VOID, "y_pred_is_labels": as_labels}
    iou = M.MeanIoU(11, **common)
    iou_vector = M.MeanIoU(11, per_class=True, **common)
    dice = M.DiceScore(11, **common)
    accuracy = M.PixelAccuracy(11, **common)
    keras_iou = keras.metrics.MeanIoU(11, ignore_class=VOID, sparse_y_pred=as_labels)
    rng = np.random.default_rng(2)
    for start in range(0, 6, 2):  # three batches: state accumulates
        y_true = true[start : start + 2, ..., None]
        if as_labels:
            y_pred = pred[start : start + 2]
        else:
            logits = rng.normal(size=(2, 360, 480, 11)).astype("float32")
            logits += 20.0 * np.eye(11, dtype="float32")[pred[start : start + 2]]
            y_pred = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
            np.testing.assert_array_equal(y_pred.argmax(-1), pred[start : start + 2])
        for metric in (iou, iou_vector, dice, accuracy, keras_iou):
            metric.update_state(y_true, y_pred)

    expected_iou = sklearn_metrics.jaccard_score(t, p, average="macro")
    assert value(iou.result()) == pytest.approx(expected_iou, rel=1e-6)
    assert value(keras_iou.result()) == pytest.approx(expected_iou, rel=1e-5)
    per_class = value(iou.result_per_class())
    np.testing.assert_allclose(value(iou_vector.result()), per_class, rtol=0, equal_nan=True)
    np.testing.assert_allclose(
        per_class[present],
        sklearn_metrics.jaccard_score(t, p, average=None, labels=present),
        rtol=1e-6,
    )
    assert np.isnan(per_class[6]) and per_class[9] == 0.0
    assert value(dice.result()) == pytest.approx(
        sklearn_metrics.f1_score(t, p, average="macro"), rel=1e-6
    )
    np.testing.assert_allclose(
        value(dice.result_per_class())[present],
        sklearn_metrics.f1_score(t, p, average=None, labels=present),
        rtol=1e-6,
    )
    assert value(accuracy.result()) == pytest.approx(sklearn_metrics.accuracy_score(t, p), rel=1e-6)
    np.testing.assert_array_equal(
        value(M.ConfusionMatrix.result(iou)),
        sklearn_metrics.confusion_matrix(t, p, labels=range(11)),
    )
    iou.reset_state()
    assert value(iou.result()) == 0.0


def test_classes_subset_and_sample_weight(camvid):
    true, pred = camvid
    valid = true != VOID
    t, p = true[valid], pred[valid]
    metric = M.MeanIoU(11, ignore_label=VOID, classes=[0, 1, 6], y_pred_is_labels=True)
    metric.update_state(true, pred)
    expected = sklearn_metrics.jaccard_score(t, p, average=None, labels=[0, 1])
    assert value(metric.result()) == pytest.approx(expected.mean(), rel=1e-6)  # 6: absent
    image_weights = np.array([1.0, 0.0, 2.0, 1.0, 1.0, 3.0], "float32")
    metric = M.DiceScore(11, ignore_label=VOID, y_pred_is_labels=True)
    metric.update_state(true, pred, sample_weight=image_weights)
    w = np.broadcast_to(image_weights[:, None, None], true.shape)[valid]
    keep = w > 0
    expected = sklearn_metrics.f1_score(t[keep], p[keep], average="macro", sample_weight=w[keep])
    assert value(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_binary_probability_maps_match_sklearn(data_dir):
    true_fg = np.stack([isbi_label(data_dir, i) for i in (0, 1)])
    rng = np.random.default_rng(3)
    pred_fg = np.stack([perturbed_foreground(fg, 10 + i) for i, fg in enumerate(true_fg)])
    probs = np.where(
        pred_fg, 0.5 + 0.5 * rng.random(pred_fg.shape), 0.5 * rng.random(pred_fg.shape)
    ).astype("float32")[..., None]
    probs[0, 0, 0, 0] = 0.5  # exactly the threshold: background (p > threshold)
    pred_fg[0, 0, 0] = False
    y_true = true_fg.astype("float32")[..., None]  # ISBI label / 255
    t, p = true_fg.reshape(-1).astype(int), pred_fg.reshape(-1).astype(int)
    iou = M.MeanIoU(2)
    dice = M.DiceScore(2, classes=[1])
    accuracy = M.PixelAccuracy(2)
    logits = M.PixelAccuracy(2, from_logits=True)
    for metric in (iou, dice, accuracy):
        metric.update_state(y_true, probs)
    logits.update_state(y_true, np.log(probs) - np.log1p(-probs))
    assert value(iou.result()) == pytest.approx(
        sklearn_metrics.jaccard_score(t, p, average="macro"), rel=1e-6
    )
    assert value(dice.result()) == pytest.approx(sklearn_metrics.f1_score(t, p), rel=1e-6)
    assert value(accuracy.result()) == pytest.approx(sklearn_metrics.accuracy_score(t, p), rel=1e-6)
    assert value(logits.result()) == pytest.approx(value(accuracy.result()), abs=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.function")
def test_confusion_metrics_in_a_traced_graph():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    true = rng.integers(0, 4, size=(3, 9, 8)).astype("int32")
    true[0, 0] = 255
    probs = rng.random((3, 9, 8, 4)).astype("float32")
    eager = M.MeanIoU(4, ignore_label=255)
    traced = M.MeanIoU(4, ignore_label=255)
    eager.update_state(true, probs)
    spec = (tf.TensorSpec((None, 9, 8), tf.int32), tf.TensorSpec((None, 9, 8, 4), tf.float32))
    tf.function(traced.update_state, input_signature=spec)(true, probs)
    assert value(traced.result()) == pytest.approx(value(eager.result()), rel=1e-6)
    # labels out of range cannot raise inside a graph: they are not counted
    bad = true.copy()
    bad[1, 1] = 9
    graph = M.PixelAccuracy(4, ignore_label=255)
    tf.function(graph.update_state, input_signature=spec)(bad, probs)
    keep = (bad != 255) & (bad < 4)
    expected = (probs.argmax(-1)[keep] == bad[keep]).mean()
    assert value(graph.result()) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- Rand / VI


def test_rand_scores_closed_form():
    # A merge of two 2-pixel cells: pairs (skimage) S_T = 8 - 4, S_P = 16 - 4, S_J = 8 - 4.
    true = np.array([[1, 1], [2, 2]])
    pred = np.array([[5, 5], [5, 5]])
    s = {k: float(v) for k, v in M.rand_scores(true, pred).items()}
    assert s["v_rand"] == pytest.approx(2 * 4 / (4 + 12))
    assert s["v_rand_split"] == pytest.approx(1.0)
    assert s["v_rand_merge"] == pytest.approx(4 / 12)
    assert s["adapted_rand_error"] == pytest.approx(0.5)
    assert s["h_true_given_pred"] == pytest.approx(1.0)  # one bit to tell the cells apart
    assert s["h_pred_given_true"] == pytest.approx(0.0, abs=1e-7)
    assert s["v_info"] == pytest.approx(0.0, abs=1e-7)  # I(T; P) = 0
    # The example of scikit-image issue #6485: skimage's (prec, rec) = (split, merge).
    true = np.array([[1, 2], [3, 2]])
    pred = np.ones((2, 2), int)
    are, prec, rec = skimage_metrics.adapted_rand_error(true, pred)
    s = M.rand_scores(true, pred)
    assert float(s["adapted_rand_error"]) == pytest.approx(are)
    assert float(s["v_rand_split"]) == pytest.approx(prec) == 1.0
    assert float(s["v_rand_merge"]) == pytest.approx(rec) == pytest.approx(2 / 12)
    # Identical segmentations score 1; an image without true foreground is undefined.
    s = M.rand_scores(np.stack([true, np.zeros_like(true)]), np.stack([true, true]))
    for key in ("v_rand", "v_info", "v_rand_split", "v_info_merge"):
        assert float(s[key][0]) == pytest.approx(1.0) and np.isnan(float(s[key][1]))


def entropy_bits(labels):
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_rand_scores_match_skimage_on_isbi(isbi):
    true_fg, pred_fg = isbi
    true = np.stack([label4(m) for m in true_fg])
    pred = np.stack([label4(m) for m in pred_fg])
    assert 100 < true.max() < 200 and pred.max() > 100
    scores = {k: value(v) for k, v in M.rand_scores(true, pred).items()}
    assert scores["v_rand"].shape == (4,)
    for i in range(4):
        are, prec, rec = skimage_metrics.adapted_rand_error(true[i], pred[i])
        assert scores["adapted_rand_error"][i] == pytest.approx(are, rel=1e-6)
        assert scores["v_rand"][i] == pytest.approx(1 - are, rel=1e-6)
        assert scores["v_rand_split"][i] == pytest.approx(prec, rel=1e-6)  # skimage #6485
        assert scores["v_rand_merge"][i] == pytest.approx(rec, rel=1e-6)
        h_pred_given_true, h_true_given_pred = skimage_metrics.variation_of_information(
            true[i], pred[i], ignore_labels=[0]
        )
        assert scores["h_pred_given_true"][i] == pytest.approx(h_pred_given_true, rel=1e-6)
        assert scores["h_true_given_pred"][i] == pytest.approx(h_true_given_pred, rel=1e-6)
        # V_info = 2 I / (H(T) + H(P)) on the true foreground, I = H(T) - H(T|P)
        fg = true[i] != 0
        h_true, h_pred = entropy_bits(true[i][fg]), entropy_bits(pred[i][fg])
        mutual = h_true - h_true_given_pred
        assert mutual == pytest.approx(h_pred - h_pred_given_true, rel=1e-9)
        assert scores["v_info"][i] == pytest.approx(2 * mutual / (h_true + h_pred), rel=1e-6)
        assert scores["v_info_split"][i] == pytest.approx(mutual / h_pred, rel=1e-6)
        assert scores["v_info_merge"][i] == pytest.approx(mutual / h_true, rel=1e-6)
    one = M.rand_scores(true[1], pred[1])  # a single (H, W) image gives scalars
    assert value(one["v_rand"]).shape == ()
    assert float(one["v_rand"]) == pytest.approx(scores["v_rand"][1], rel=1e-7)


def isbi2012_reference(true, pred):
    """The challenge's Fiji script (foregroundRestrictedStatsN2 / foregroundRestrictedVI)
    in numpy: N^2 normalization, predicted zeros as singletons."""
    fg = true != 0
    t, p = true[fg], pred[fg]
    n = float(fg.sum())
    _, a = np.unique(t, return_counts=True)
    nonzero = p != 0
    n0 = float((~nonzero).sum())
    _, b = np.unique(p[nonzero], return_counts=True)
    pairs = np.stack([t[nonzero], p[nonzero]], axis=1)
    _, nij = np.unique(pairs, axis=0, return_counts=True)
    a, b, nij = a / n, b / n, nij / n
    sum_a2 = (a**2).sum()
    sum_b2 = (b**2).sum() + n0 / n / n
    sum_ab2 = (nij**2).sum() + n0 / n / n
    precision, recall = sum_ab2 / sum_b2, sum_ab2 / sum_a2
    v_rand = 2 * precision * recall / (precision + recall)
    h_true = -(a * np.log(a)).sum()
    h_pred = -(b * np.log(b)).sum() + n0 / n * np.log(n)
    h_joint = -(nij * np.log(nij)).sum() + n0 / n * np.log(n)
    mutual = h_true + h_pred - h_joint
    return v_rand, precision, recall, 2 * mutual / (h_true + h_pred)


def test_rand_scores_isbi2012_convention(isbi):
    true_fg, pred_fg = isbi
    true = np.stack([label4(m) for m in true_fg])
    pred = np.stack([label4(m) for m in pred_fg])
    assert ((true != 0) & (pred == 0)).sum() > 1000  # predicted zeros inside cells
    scores = {k: value(v) for k, v in M.rand_scores(true, pred, convention="isbi2012").items()}
    for i in range(4):
        v_rand, precision, recall, v_info = isbi2012_reference(true[i], pred[i])
        assert scores["v_rand"][i] == pytest.approx(v_rand, rel=1e-6)
        assert scores["v_rand_merge"][i] == pytest.approx(precision, rel=1e-6)
        assert scores["v_rand_split"][i] == pytest.approx(recall, rel=1e-6)
        assert scores["v_info"][i] == pytest.approx(v_info, rel=1e-6)
    skimage_scores = value(M.rand_scores(true, pred)["v_rand"])
    assert not np.allclose(skimage_scores, scores["v_rand"], rtol=1e-3)  # they do differ


def expected_means(true_fg, pred_fg):
    v_rand, v_info = [], []
    for t, p in zip(true_fg, pred_fg, strict=True):
        t, p = label4(t), label4(p)
        v_rand.append(1 - skimage_metrics.adapted_rand_error(t, p)[0])
        h_pg_t, h_tg_p = skimage_metrics.variation_of_information(t, p, ignore_labels=[0])
        fg = t != 0
        h_t, h_p = entropy_bits(t[fg]), entropy_bits(p[fg])
        v_info.append(2 * (h_t - h_tg_p) / (h_t + h_p))
    return np.mean(v_rand), np.mean(v_info)


def test_vrand_vinfo_metrics_from_binary_maps(isbi):
    true_fg, pred_fg = isbi
    rng = np.random.default_rng(5)
    probs = np.where(
        pred_fg, 0.6 + 0.4 * rng.random(pred_fg.shape), 0.4 * rng.random(pred_fg.shape)
    ).astype("float32")[..., None]
    y_true = true_fg.astype("float32")[..., None]
    expected_rand, expected_info = expected_means(true_fg, pred_fg)

    v_rand, v_info = M.VRand(), M.VInfo()
    for start in (0, 2):
        v_rand.update_state(y_true[start : start + 2], probs[start : start + 2])
        v_info.update_state(y_true[start : start + 2], probs[start : start + 2])
    assert value(v_rand.result()) == pytest.approx(expected_rand, rel=1e-6)
    assert value(v_info.result()) == pytest.approx(expected_info, rel=1e-6)

    # the same scores from other encodings of the same maps
    variants = [
        (M.VRand(foreground_class=0), y_true == 0, 1 - probs),  # membrane = class 1 maps
        (M.VRand(from_logits=True), y_true, np.log(probs) - np.log1p(-probs)),
        (M.VRand(y_pred_is_labels=True), y_true, pred_fg.astype("uint8")),
        (M.VRand(), y_true, np.concatenate([1 - probs, probs], axis=-1)),  # softmax
        (
            M.VRand(instance_labels=True),
            np.stack([label4(m) for m in true_fg]),
            np.stack([label4(m) for m in pred_fg]),
        ),
    ]
    for metric, t, p in variants:
        metric.update_state(np.asarray(t).astype("float32"), p)
        assert value(metric.result()) == pytest.approx(expected_rand, rel=1e-6)


def test_vrand_weights_skip_empty_images_and_reset(isbi):
    true_fg, pred_fg = isbi
    y_true = np.concatenate([true_fg[:2], np.zeros_like(true_fg[:1])]).astype("float32")
    y_pred = np.concatenate([pred_fg[:2], pred_fg[:1]]).astype("float32")[..., None]
    first = 1 - skimage_metrics.adapted_rand_error(label4(true_fg[0]), label4(pred_fg[0]))[0]
    second = 1 - skimage_metrics.adapted_rand_error(label4(true_fg[1]), label4(pred_fg[1]))[0]
    metric = M.VRand()
    metric.update_state(y_true, y_pred)  # the empty third image is skipped
    assert value(metric.result()) == pytest.approx((first + second) / 2, rel=1e-6)
    metric.reset_state()
    metric.update_state(y_true, y_pred, sample_weight=np.array([1.0, 3.0, 5.0]))
    assert value(metric.result()) == pytest.approx((first + 3 * second) / 4, rel=1e-6)
    metric.reset_state()
    assert value(metric.result()) == 0.0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.function")
def test_vrand_in_a_compiled_graph(isbi):
    import tensorflow as tf

    true_fg, pred_fg = isbi
    y_true = true_fg[:2, 100:356, 100:356].astype("float32")[..., None]
    y_pred = pred_fg[:2, 100:356, 100:356].astype("float32")[..., None]
    expected_rand, expected_info = expected_means(
        true_fg[:2, 100:356, 100:356], pred_fg[:2, 100:356, 100:356]
    )
    spec = [tf.TensorSpec((None, 256, 256, 1), tf.float32)] * 2
    for jit in (False, True):
        for metric, expected in (
            (M.VRand(), expected_rand),
            (M.VInfo(convention="skimage"), expected_info),
        ):
            tf.function(metric.update_state, input_signature=spec, jit_compile=jit)(y_true, y_pred)
            assert value(metric.result()) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- errors


def test_metric_argument_and_input_errors():
    with pytest.raises(ValueError, match="MeanIoU: `num_classes` must be an int >= 2"):
        M.MeanIoU(1)
    with pytest.raises(ValueError, match=r"DiceScore: `classes` must be ids < num_classes=3"):
        M.DiceScore(3, classes=[3])
    with pytest.raises(
        ValueError,
        match=r"VRand: `convention` must be one of \('skimage', "
        r"'isbi2012'\); got 'snemi'",
    ):
        M.VRand(convention="snemi")
    with pytest.raises(ValueError, match="VInfo: `connectivity` must be 1"):
        M.VInfo(connectivity=3)
    with pytest.raises(ValueError, match="`threshold` must be <= 1.0"):
        M.PixelAccuracy(2, threshold=1.5)
    labels = np.zeros((2, 4, 5), "int32")
    metric = M.MeanIoU(3)
    with pytest.raises(ValueError, match=r"MeanIoU: `y_pred` must have num_classes=3 channels"):
        metric.update_state(labels, np.zeros((2, 4, 5, 4), "float32"))
    with pytest.raises(ValueError, match="needs num_classes=2; got num_classes=3"):
        metric.update_state(labels, np.zeros((2, 4, 5, 1), "float32"))
    with pytest.raises(
        ValueError,
        match=r"`y_true` must hold integer ids .* \(one-hot\? "
        r"pass its argmax\)",
    ):
        metric.update_state(np.zeros((2, 4, 5, 3)), np.zeros((2, 4, 5, 3), "float32"))
    with pytest.raises(
        ValueError,
        match=r"`y_true` must hold class ids 0..2 \(or "
        r"ignore_label=255\); got \[7\]",
    ):
        M.MeanIoU(3, ignore_label=255).update_state(labels + 7, np.zeros((2, 4, 5, 3)))
    with pytest.raises(ValueError, match="must agree in batch and spatial size"):
        metric.update_state(labels[:, :3], np.zeros((2, 4, 5, 3), "float32"))
    with pytest.raises(
        ValueError,
        match=r"`y_pred` must have shape \(batch, height, width, "
        r"channels\)",
    ):
        metric.update_state(labels, labels)
    with pytest.raises(TypeError, match="rand_scores: `true_labels` must be integer"):
        M.rand_scores(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(
        ValueError, match="rand_scores: `true_labels` and `pred_labels` must have the same shape"
    ):
        M.rand_scores(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="confusion_matrix: `y_pred` must hold class ids"):
        M.confusion_matrix(labels, labels + 3, 3)


# ----------------------------------------------------------------------------- serialization


@pytest.mark.parametrize(
    "metric",
    [
        M.ConfusionMatrix(4, ignore_label=255, y_pred_is_labels=True, name="cm"),
        M.MeanIoU(11, ignore_label=11, per_class=True, classes=[0, 3], threshold=0.3),
        M.DiceScore(2, classes=[1], from_logits=True),
        M.PixelAccuracy(5, ignore_label=-1),
        M.VRand(threshold=0.4, foreground_class=0, connectivity=8, convention="isbi2012"),
        M.VInfo(instance_labels=True, y_pred_is_labels=True, name="vi"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_metric_config_round_trip(metric):
    config = metric.get_config()
    assert type(metric).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is type(metric) and restored.get_config() == config
