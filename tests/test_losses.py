"""kerasseg.losses against hand-computed values, smp's published formulas written out in numpy,
an independent numpy Lovasz extension, and Keras' own losses where they coincide."""

import keras
import numpy as np
import pytest
from keras import ops

from kerasseg import losses as L
from kerasseg import metrics as M

RNG = np.random.default_rng(1234)


def value(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def multiclass_case(batch=2, height=6, width=7, classes=4, ignore=255, absent=None, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(batch, height, width, classes)).astype("float32")
    labels = rng.integers(0, classes, size=(batch, height, width))
    if absent is not None:
        labels[labels == absent] = 0
    if ignore is not None:
        labels[rng.random(labels.shape) < 0.2] = ignore
    return labels, logits


# ----------------------------------------------------------------------------- references


def smp_region_loss(
    probs,
    y,
    mode,
    kind,
    ignore=None,
    smooth=0.0,
    eps=1e-7,
    per_image=False,
    classes=None,
    alpha=0.5,
    beta=0.5,
    log_loss=False,
    gamma=None,
):
    """segmentation_models.pytorch DiceLoss/JaccardLoss/TverskyLoss.forward in numpy
    (layout (B, C, P), dims=(0, 2)); per_image sums over dims=(2,) instead; gamma: per-class
    focal exponent (Abraham & Khan)."""
    batch, channels = probs.shape[0], probs.shape[-1]
    p = probs.reshape(batch, -1, channels).transpose(0, 2, 1).astype("float64")
    if mode == "multiclass":
        yt = y.reshape(batch, -1)
        mask = np.ones_like(yt, bool) if ignore is None else yt != ignore
        p = p * mask[:, None]
        onehot = np.eye(channels)[(yt * mask).astype(int)].transpose(0, 2, 1)
        t = onehot * mask[:, None]
    elif mode == "binary":
        yt = y.reshape(batch, 1, -1).astype("float64")
        mask = np.ones_like(yt, bool) if ignore is None else yt != ignore
        p, t = p * mask, yt * mask
    else:
        yt = y.reshape(batch, -1, channels).transpose(0, 2, 1).astype("float64")
        mask = np.ones_like(yt, bool) if ignore is None else yt != ignore
        p, t = p * mask, yt * mask
    dims = (2,) if per_image else (0, 2)
    inter = (p * t).sum(dims)
    card = (p + t).sum(dims)
    if kind == "dice":
        score = (2 * inter + smooth) / np.maximum(card + smooth, eps)
    elif kind == "jaccard":
        score = (inter + smooth) / np.maximum(card - inter + smooth, eps)
    else:
        fp = (p * (1 - t)).sum(dims)
        fn = ((1 - p) * t).sum(dims)
        score = (inter + smooth) / np.maximum(inter + alpha * fp + beta * fn + smooth, eps)
    loss = -np.log(np.maximum(score, eps)) if log_loss else 1 - score
    if gamma is not None:
        loss = np.maximum(loss, eps) ** gamma
    loss = loss * (t.sum(dims) > 0)
    if classes is not None:
        loss = loss[..., classes]
    return loss.mean()


def np_bce_with_logits(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def np_lovasz_grad(gt_sorted):
    """Berman et al. 2018, Algorithm 1: gradient of the Lovasz extension of the Jaccard loss."""
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].copy()
    return jaccard


def np_lovasz_softmax_flat(probs, labels, classes="present"):
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).astype("float64")
        if classes == "present" and fg.sum() == 0:
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        losses.append(np.dot(errors[order], np_lovasz_grad(fg[order])))
    return float(np.mean(losses)) if losses else 0.0


def np_lovasz_softmax(probs, labels, ignore=None, per_image=False, classes="present"):
    def flat(pr, lab):
        pr = pr.reshape(-1, pr.shape[-1])
        lab = lab.reshape(-1)
        keep = np.ones_like(lab, bool) if ignore is None else lab != ignore
        return np_lovasz_softmax_flat(pr[keep], lab[keep], classes)

    if per_image:
        return float(np.mean([flat(p, y) for p, y in zip(probs, labels, strict=True)]))
    return flat(probs, labels)


def np_lovasz_hinge(logits, labels, ignore=None, per_image=False):
    def flat(x, y):
        x, y = x.reshape(-1).astype("float64"), y.reshape(-1)
        keep = np.ones_like(y, bool) if ignore is None else y != ignore
        x, y = x[keep], y[keep].astype("float64")
        if not len(y):
            return 0.0
        errors = 1.0 - x * (2.0 * y - 1.0)
        order = np.argsort(-errors, kind="stable")
        return float(np.dot(np.maximum(errors[order], 0.0), np_lovasz_grad(y[order])))

    if per_image:
        return float(np.mean([flat(x, y) for x, y in zip(logits, labels, strict=True)]))
    return flat(logits, labels)


# ----------------------------------------------------------------------------- closed forms

Y2 = np.array([[[1, 0], [1, 1]]], "float32")  # (1, 2, 2)
P2 = np.array([[[0.8, 0.4], [0.6, 0.2]]], "float32")[..., None]  # (1, 2, 2, 1)
# TP = 0.8 + 0.6 + 0.2 = 1.6, sum(p) = 2.0, sum(t) = 3, FP = 0.4, FN = 1.4


@pytest.mark.parametrize(
    "loss, expected",
    [
        (L.DiceLoss(mode="binary"), 1 - 3.2 / 5.0),
        (L.DiceLoss(mode="binary", smooth=1.0), 1 - 4.2 / 6.0),
        (L.DiceLoss(mode="binary", log_loss=True), -np.log(3.2 / 5.0)),
        (L.JaccardLoss(mode="binary"), 1 - 1.6 / 3.4),
        (L.TverskyLoss(mode="binary", alpha=0.3, beta=0.7), 1 - 1.6 / (1.6 + 0.12 + 0.98)),
        (L.TverskyLoss(mode="binary", alpha=1.0, beta=1.0), 1 - 1.6 / 3.4),
        (L.FocalTverskyLoss(mode="binary"), (1 - 1.6 / 2.7) ** 0.75),
        (L.FocalTverskyLoss(mode="binary", alpha=0.5, beta=0.5, gamma=2.0), 0.36**2),
        (
            L.CrossEntropyLoss(mode="binary"),
            -(np.log(0.8) + 2 * np.log(0.6) + np.log(0.2)) / 4,
        ),
        (
            L.FocalLoss(mode="binary", gamma=2.0),
            -(0.2**2 * np.log(0.8) + 2 * 0.4**2 * np.log(0.6) + 0.8**2 * np.log(0.2)) / 4,
        ),
        (
            L.FocalLoss(mode="binary", gamma=2.0, alpha=0.25),
            -(
                0.25 * 0.2**2 * np.log(0.8)
                + 0.75 * 0.4**2 * np.log(0.6)
                + 0.25 * 0.4**2 * np.log(0.6)
                + 0.25 * 0.8**2 * np.log(0.2)
            )
            / 4,
        ),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, keras.losses.Loss) else "",
)
def test_binary_2x2_closed_form(loss, expected):
    assert value(loss(Y2, P2)) == pytest.approx(expected, rel=1e-5)
    assert value(loss(Y2[..., None], P2)) == pytest.approx(expected, rel=1e-5)  # (B, H, W, 1)


def test_lovasz_hinge_2x2_closed_form():
    # logits s = (2, -1, 0.5, -3) for t = (1, 0, 1, 1): errors 1 - s(2t - 1) = (-1, 0, 0.5, 4).
    # Sorted: 4 (fg), 0.5 (fg), 0 (bg), -1 (fg); gts = 3. Jaccard losses of the prefixes:
    # {4}: 1 - 2/3 = 1/3; {4, .5}: 1 - 1/3 = 2/3; then 1 - 1/4 = 3/4 -> gradient (1/3, 1/3, ..).
    logits = np.array([[[2.0, -1.0], [0.5, -3.0]]], "float32")[..., None]
    loss = L.LovaszLoss(mode="binary", from_logits=True)
    assert value(loss(Y2, logits)) == pytest.approx(4 / 3 + 0.5 / 3, rel=1e-6)


def test_lovasz_softmax_hard_prediction_is_jaccard_loss():
    # On one-hot predictions the Lovasz extension equals the set function: 1 - IoU per class.
    labels, logits = multiclass_case(ignore=255, seed=3)
    predicted = logits.argmax(-1)
    probs = np.eye(4, dtype="float32")[predicted]
    valid = labels != 255
    ious = []
    for c in range(4):
        t, p = (labels == c) & valid, (predicted == c) & valid
        if t.any():
            ious.append((t & p).sum() / (t | p).sum())
    expected = 1 - np.mean(ious)
    loss = L.LovaszLoss(ignore_label=255)
    assert value(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- smp formulas


@pytest.mark.parametrize(
    "kind, cls", [("dice", L.DiceLoss), ("jaccard", L.JaccardLoss), ("tversky", L.TverskyLoss)]
)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"smooth": 1.0},
        {"per_image": True},
        {"classes": [0, 2, 3]},
        {"log_loss": True, "eps": 1e-5},
        {"ignore": None},
    ],
    ids=["default", "smooth", "per_image", "classes", "log_loss", "no_ignore"],
)
def test_region_losses_match_smp_multiclass(kind, cls, options):
    options = dict(options)
    ignore = options.pop("ignore", 255)
    labels, logits = multiclass_case(ignore=ignore, absent=1)  # class 1 absent: contributes 0
    extra = {"alpha": 0.3, "beta": 0.7} if kind == "tversky" else {}
    loss = cls(mode="multiclass", from_logits=True, ignore_label=ignore, **options, **extra)
    expected = smp_region_loss(
        np_softmax(logits), labels, "multiclass", kind, ignore=ignore, **options, **extra
    )
    assert value(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
def test_region_losses_match_smp_binary_and_multilabel(per_image):
    rng = np.random.default_rng(7)
    probs = rng.random((3, 5, 4, 1)).astype("float32")
    y = (rng.random((3, 5, 4)) < 0.4).astype("int32")
    y[0, 0] = 7  # ignored
    y[2] = 0  # an image without positives
    for kind, cls in (("dice", L.DiceLoss), ("jaccard", L.JaccardLoss)):
        loss = cls(mode="binary", ignore_label=7, per_image=per_image)
        expected = smp_region_loss(probs, y, "binary", kind, ignore=7, per_image=per_image)
        assert value(loss(y, probs)) == pytest.approx(expected, rel=1e-5)
    multi = rng.random((3, 5, 4, 3)).astype("float32")
    ym = (rng.random((3, 5, 4, 3)) < 0.3).astype("float32")
    ym[1, 1, :, 2] = 255
    loss = L.DiceLoss(mode="multilabel", ignore_label=255, per_image=per_image)
    expected = smp_region_loss(multi, ym, "multilabel", "dice", ignore=255, per_image=per_image)
    assert value(loss(ym, multi)) == pytest.approx(expected, rel=1e-5)


def test_focal_tversky_matches_formula():
    labels, logits = multiclass_case(ignore=255, absent=2)
    loss = L.FocalTverskyLoss(from_logits=True, ignore_label=255, gamma=0.75)
    expected = smp_region_loss(
        np_softmax(logits),
        labels,
        "multiclass",
        "tversky",
        ignore=255,
        alpha=0.3,
        beta=0.7,
        gamma=0.75,
    )
    assert value(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_focal_binary_matches_smp_focal_loss_with_logits():
    rng = np.random.default_rng(5)
    x = rng.normal(scale=3, size=(2, 6, 6, 1)).astype("float32")
    y = (rng.random((2, 6, 6)) < 0.3).astype("int32")
    y[1, :2] = 255
    for alpha in (None, 0.25):
        for gamma in (2.0, 0.5):
            keep = y != 255
            xt, yt = x[..., 0][keep].astype("float64"), y[keep].astype("float64")
            logpt = np_bce_with_logits(xt, yt)
            focal = (1 - np.exp(-logpt)) ** gamma * logpt
            if alpha is not None:
                focal *= alpha * yt + (1 - alpha) * (1 - yt)
            loss = L.FocalLoss(
                mode="binary", alpha=alpha, gamma=gamma, from_logits=True, ignore_label=255
            )
            assert value(loss(y, x)) == pytest.approx(focal.mean(), rel=1e-5)


def test_focal_multiclass_matches_keras_and_numpy():
    labels, logits = multiclass_case(ignore=None, seed=9)
    onehot = np.eye(4, dtype="float32")[labels]
    ours = L.FocalLoss(mode="multiclass", alpha=0.25, gamma=2.0, from_logits=True)
    theirs = keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0, from_logits=True)
    assert value(ours(labels, logits)) == pytest.approx(value(theirs(onehot, logits)), rel=1e-5)

    labels, logits = multiclass_case(ignore=255, seed=10)
    alpha = [0.1, 0.2, 0.3, 0.4]
    keep = labels != 255
    logp = np.log(np_softmax(logits.astype("float64")))[keep]
    y = labels[keep]
    ce = -logp[np.arange(len(y)), y]
    expected = (np.asarray(alpha)[y] * (1 - np.exp(-ce)) ** 2 * ce).mean()
    loss = L.FocalLoss(alpha=alpha, from_logits=True, ignore_label=255)
    assert value(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("ignore", [11, 255, 2])
@pytest.mark.parametrize("from_logits", [True, False])
def test_cross_entropy_matches_keras_sparse_categorical(ignore, from_logits):
    labels, logits = multiclass_case(batch=3, classes=11, ignore=ignore, seed=11)
    y_pred = logits if from_logits else np_softmax(logits).astype("float32")
    ours = L.CrossEntropyLoss(from_logits=from_logits, ignore_label=ignore)
    theirs = keras.losses.SparseCategoricalCrossentropy(
        from_logits=from_logits, ignore_class=ignore
    )
    assert value(ours(labels, y_pred)) == pytest.approx(value(theirs(labels, y_pred)), rel=1e-5)
    weights = np.random.default_rng(0).random(labels.shape).astype("float32")
    assert value(ours(labels, y_pred, sample_weight=weights)) == pytest.approx(
        value(theirs(labels, y_pred, sample_weight=weights)), rel=1e-5
    )


def test_binary_cross_entropy_matches_keras_without_ignore():
    rng = np.random.default_rng(2)
    probs = rng.random((2, 5, 5, 1)).astype("float32")
    y = (rng.random((2, 5, 5, 1)) < 0.5).astype("float32")
    theirs = keras.losses.BinaryCrossentropy()
    assert value(L.CrossEntropyLoss(mode="binary")(y, probs)) == pytest.approx(
        value(theirs(y, probs)), rel=1e-5
    )
    multi = rng.random((2, 5, 5, 3)).astype("float32")
    ym = (rng.random((2, 5, 5, 3)) < 0.5).astype("float32")
    assert value(L.CrossEntropyLoss(mode="multilabel")(ym, multi)) == pytest.approx(
        value(theirs(ym, multi)), rel=1e-5
    )


# ----------------------------------------------------------------------------- Lovasz


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all", [0, 3]])
def test_lovasz_softmax_matches_numpy_extension(per_image, classes):
    labels, logits = multiclass_case(batch=3, ignore=255, absent=2, seed=21)
    labels[2] = 255  # an image with nothing to score
    loss = L.LovaszLoss(
        mode="multiclass", classes=classes, per_image=per_image, from_logits=True, ignore_label=255
    )
    probs = np_softmax(logits.astype("float64"))
    if isinstance(classes, list):
        # the reference averages the listed classes (present or not)
        def flat(p, y):
            keep = y.reshape(-1) != 255
            p, y = p.reshape(-1, 4)[keep], y.reshape(-1)[keep]
            out = []
            for c in classes:
                fg = (y == c).astype("float64")
                errors = np.abs(fg - p[:, c])
                order = np.argsort(-errors, kind="stable")
                out.append(np.dot(errors[order], np_lovasz_grad(fg[order])))
            return np.mean(out)

        if per_image:
            expected = np.mean([flat(p, y) for p, y in zip(probs, labels, strict=True)])
        else:
            expected = flat(probs, labels)
    else:
        expected = np_lovasz_softmax(probs, labels, 255, per_image, classes)
    assert value(loss(labels, logits)) == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_hinge_matches_numpy_extension(per_image):
    rng = np.random.default_rng(4)
    x = rng.normal(scale=2, size=(3, 7, 5, 1)).astype("float32")
    y = (rng.random((3, 7, 5)) < 0.4).astype("int32")
    y[0, :3] = 255
    loss = L.LovaszLoss(mode="binary", per_image=per_image, from_logits=True, ignore_label=255)
    expected = np_lovasz_hinge(x[..., 0], y, 255, per_image)
    assert value(loss(y, x)) == pytest.approx(expected, rel=1e-5)
    # probabilities are turned into the same logits
    probs = np_sigmoid(x.astype("float64")).astype("float32")
    loss = L.LovaszLoss(mode="binary", per_image=per_image, ignore_label=255)
    assert value(loss(y, probs)) == pytest.approx(expected, rel=1e-4)
    # multilabel: the hinge per channel, averaged
    xm = rng.normal(size=(3, 7, 5, 2)).astype("float32")
    ym = (rng.random((3, 7, 5, 2)) < 0.5).astype("int32")
    expected = np.mean([np_lovasz_hinge(xm[..., c], ym[..., c], None, per_image) for c in range(2)])
    loss = L.LovaszLoss(mode="multilabel", per_image=per_image, from_logits=True)
    assert value(loss(ym, xm)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- properties


def all_losses(mode, ignore):
    common = {"mode": mode, "ignore_label": ignore}
    return [
        L.DiceLoss(**common),
        L.DiceLoss(per_image=True, **common),
        L.JaccardLoss(**common),
        L.TverskyLoss(alpha=0.3, beta=0.7, **common),
        L.FocalTverskyLoss(**common),
        L.FocalLoss(gamma=2.0, **common),
        L.FocalLoss(gamma=0.5, **common),
        L.CrossEntropyLoss(**common),
        L.LovaszLoss(**common),
        L.LovaszLoss(per_image=True, **common),
        L.WeightedSum([(L.DiceLoss(**common), 1.0), (L.FocalLoss(**common), 2.0)]),
    ]


def case_for(mode, ignore, seed=0):
    rng = np.random.default_rng(seed)
    if mode == "multiclass":
        labels, logits = multiclass_case(ignore=ignore, seed=seed)
        return labels, np_softmax(logits).astype("float32"), labels == ignore
    channels = 1 if mode == "binary" else 3
    shape = (2, 6, 7, channels)
    probs = rng.random(shape).astype("float32")
    y = (rng.random(shape) < 0.4).astype("int32")
    ignored = rng.random(shape) < 0.2
    if mode == "binary":
        y, ignored = y[..., 0], ignored[..., 0]
    y[ignored] = ignore
    return y, probs, ignored


@pytest.mark.parametrize(
    "mode, ignore", [("multiclass", 255), ("multiclass", 4), ("binary", 255), ("multilabel", 2)]
)
def test_ignored_pixels_change_nothing(mode, ignore):
    y, probs, ignored = case_for(mode, ignore)
    rng = np.random.default_rng(99)
    other = probs.copy()
    if mode == "multiclass":
        replacement = np_softmax(rng.normal(scale=5, size=probs.shape)).astype("float32")
        other[ignored] = replacement[ignored]
    else:
        other[ignored.reshape(other.shape)] = rng.random(int(ignored.sum()))
    for loss in all_losses(mode, ignore):
        first, second = value(loss(y, probs)), value(loss(y, other))
        assert np.isfinite(first)
        assert second == pytest.approx(first, rel=1e-6, abs=1e-7), loss.name


@pytest.mark.parametrize("mode", ["multiclass", "binary", "multilabel"])
def test_perfect_prediction_gives_zero_loss(mode):
    y, _, ignored = case_for(mode, 255, seed=4)
    if mode == "multiclass":
        perfect = np.eye(4, dtype="float32")[np.where(ignored, 0, y)]
    else:
        perfect = np.where(ignored, 0, y).astype("float32")
        perfect = perfect.reshape(perfect.shape + (1,) if mode == "binary" else perfect.shape)
    for loss in all_losses(mode, 255):
        assert value(loss(y, perfect)) == pytest.approx(0.0, abs=1e-4), loss.name


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape")
@pytest.mark.parametrize("mode", ["multiclass", "binary", "multilabel"])
def test_gradients_are_finite(mode):
    import tensorflow as tf

    y, probs, ignored = case_for(mode, 255, seed=6)
    rng = np.random.default_rng(6)
    logits = rng.normal(scale=3, size=probs.shape).astype("float32")
    logits.reshape(-1)[:5] = [40.0, -40.0, 0.0, 80.0, -80.0]  # saturated sigmoid/softmax
    if mode == "multiclass":
        perfect = np.eye(4, dtype="float32")[np.where(ignored, 0, y)]
    else:
        perfect = np.where(ignored, 0, y).astype("float32").reshape(probs.shape)
    common = {"mode": mode, "ignore_label": 255}
    for from_logits, inputs in ((True, logits), (False, probs), (False, perfect)):
        for loss in all_losses(mode, 255) + [
            L.DiceLoss(from_logits=from_logits, **common),
            L.FocalTverskyLoss(from_logits=from_logits, **common),
            L.FocalLoss(from_logits=from_logits, gamma=0.5, **common),
            L.LovaszLoss(from_logits=from_logits, **common),
            L.CrossEntropyLoss(from_logits=from_logits, **common),
        ]:
            if from_logits and not getattr(loss, "from_logits", False):
                continue
            x = tf.Variable(inputs)
            with tf.GradientTape() as tape:
                out = loss(y, x)
            grad = tape.gradient(out, x)
            assert np.isfinite(float(out)), loss.name
            assert grad is not None and np.all(np.isfinite(grad.numpy())), loss.name


def test_sample_weights():
    labels, logits = multiclass_case(ignore=255, seed=12)
    per_image = np.array([1.0, 3.0], "float32")
    pixel = np.broadcast_to(per_image[:, None, None], labels.shape)
    ce = L.CrossEntropyLoss(from_logits=True, ignore_label=255)
    assert value(ce(labels, logits, sample_weight=per_image)) == pytest.approx(
        value(ce(labels, logits, sample_weight=pixel)), rel=1e-6
    )
    # Region losses: weight 0 is the same as ignoring the pixel
    mask = np.random.default_rng(0).random(labels.shape) < 0.3
    dice = L.DiceLoss(from_logits=True, ignore_label=255)
    masked = np.where(mask, 255, labels)
    assert value(dice(labels, logits, sample_weight=(~mask).astype("float32"))) == pytest.approx(
        value(dice(masked, logits)), rel=1e-6
    )
    lovasz = L.LovaszLoss(per_image=True, from_logits=True, ignore_label=255)
    single = [value(lovasz(labels[i : i + 1], logits[i : i + 1])) for i in range(2)]
    assert value(lovasz(labels, logits, sample_weight=per_image)) == pytest.approx(
        (single[0] * 1 + single[1] * 3) / 2, rel=1e-5
    )
    with pytest.raises(ValueError, match="per_image=True"):
        L.LovaszLoss(from_logits=True, ignore_label=255)(labels, logits, sample_weight=per_image)


def test_reductions():
    labels, logits = multiclass_case(ignore=255, seed=13)
    valid = labels != 255
    per_pixel = value(
        L.CrossEntropyLoss(from_logits=True, ignore_label=255, reduction=None)(labels, logits)
    )
    assert per_pixel.shape == labels.shape
    assert np.all(per_pixel[~valid] == 0) and np.all(per_pixel[valid] > 0)
    total = value(
        L.CrossEntropyLoss(from_logits=True, ignore_label=255, reduction="sum")(labels, logits)
    )
    mean = value(L.CrossEntropyLoss(from_logits=True, ignore_label=255)(labels, logits))
    assert total == pytest.approx(per_pixel.sum(), rel=1e-5)
    assert mean == pytest.approx(per_pixel.sum() / valid.sum(), rel=1e-5)
    dice = L.DiceLoss(from_logits=True, per_image=True, reduction=None, ignore_label=255)
    per_image = value(dice(labels, logits))
    assert per_image.shape == (2,)


def test_mixed_precision_inputs_compute_in_float32():
    labels, logits = multiclass_case(ignore=255, seed=14)
    for loss in all_losses("multiclass", 255):
        full = loss(labels, np_softmax(logits).astype("float32"))
        half = loss(labels, np_softmax(logits).astype("float16"))
        assert keras.backend.standardize_dtype(half.dtype) == "float32", loss.name
        assert value(half) == pytest.approx(value(full), rel=2e-3, abs=1e-3), loss.name


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.function")
def test_losses_trace_with_unknown_batch_and_xla():
    import tensorflow as tf

    labels, logits = multiclass_case(ignore=255, seed=15)
    for loss in all_losses("multiclass", 255):
        eager = value(loss(labels, logits))
        spec = (tf.TensorSpec((None, 6, 7), tf.int32), tf.TensorSpec((None, 6, 7, 4), tf.float32))
        traced = tf.function(lambda y, p, loss=loss: loss(y, p), input_signature=spec)
        assert value(traced(labels.astype("int32"), logits)) == pytest.approx(eager, rel=1e-5)
        jitted = tf.function(lambda y, p, loss=loss: loss(y, p), jit_compile=True)
        assert value(jitted(labels.astype("int32"), logits)) == pytest.approx(eager, rel=1e-5)


# ----------------------------------------------------------------------------- errors


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"DiceLoss: `mode` must be one of .* got 'softmax'"):
        L.DiceLoss(mode="softmax")
    with pytest.raises(TypeError, match="FocalLoss: `ignore_label` must be an int or None"):
        L.FocalLoss(ignore_label=1.5)
    with pytest.raises(ValueError, match="DiceLoss: `classes` does not apply to mode='binary'"):
        L.DiceLoss(mode="binary", classes=[0])
    with pytest.raises(ValueError, match="JaccardLoss: `classes` must be"):
        L.JaccardLoss(classes=[])
    with pytest.raises(ValueError, match="TverskyLoss: `alpha` must be >= 0.0"):
        L.TverskyLoss(alpha=-1)
    with pytest.raises(ValueError, match="FocalLoss: `alpha` must be <= 1.0"):
        L.FocalLoss(mode="binary", alpha=2.0)
    with pytest.raises(TypeError, match="FocalLoss: `alpha` must be None or a float"):
        L.FocalLoss(mode="binary", alpha=[0.1, 0.9])
    with pytest.raises(ValueError, match="LovaszLoss: `classes` must be None, 'present'"):
        L.LovaszLoss(classes="some")
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        L.CrossEntropyLoss(reduction="average")
    with pytest.raises(TypeError, match="WeightedSum: each loss must be a keras.losses.Loss"):
        L.WeightedSum([("dice", 1.0)])
    with pytest.raises(TypeError, match="WeightedSum: `weight` must be a finite number"):
        L.WeightedSum([(L.DiceLoss(), float("nan"))])
    with pytest.raises(ValueError, match="WeightedSum: `terms` must not be empty"):
        L.WeightedSum([])


def test_input_errors_name_shapes_and_values():
    labels, logits = multiclass_case(ignore=None)
    with pytest.raises(
        ValueError,
        match=r"DiceLoss: `y_pred` must have shape .* got shape "
        r"\(2, 6, 7\)",
    ):
        L.DiceLoss()(labels, logits[..., 0])
    with pytest.raises(ValueError, match="looks one-hot"):
        L.DiceLoss()(np.eye(4)[labels], logits)
    with pytest.raises(ValueError, match=r"mode='binary' expects `y_pred` with 1 channel"):
        L.FocalLoss(mode="binary")(labels, logits)
    with pytest.raises(ValueError, match=r"mode='multiclass' expects `y_pred` with C >= 2"):
        L.DiceLoss()(labels, logits[..., :1])
    with pytest.raises(
        ValueError,
        match=r"mode='multilabel' expects `y_true` of shape "
        r"\(batch, height, width, 4\)",
    ):
        L.DiceLoss(mode="multilabel")(np.zeros((2, 6, 7, 3)), logits)
    with pytest.raises(ValueError, match="must agree in batch and spatial size"):
        L.DiceLoss()(labels[:, :5], logits)
    with pytest.raises(
        ValueError,
        match=r"must hold integers 0..3 \(or ignore_label=255\); "
        r"got \[7.0\]",
    ):
        L.CrossEntropyLoss(ignore_label=255)(np.where(labels == 1, 7, labels), logits)
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\]"):
        L.DiceLoss(mode="binary")(labels, logits[..., :1])
    with pytest.raises(ValueError, match="`classes` must be ids < 4"):
        L.DiceLoss(classes=[0, 4])(labels, logits)


# ----------------------------------------------------------------------------- serialization


def every_loss():
    return [
        L.DiceLoss(
            mode="multilabel",
            classes=[0, 2],
            smooth=1.0,
            eps=1e-6,
            log_loss=True,
            ignore_label=255,
            per_image=True,
            reduction="sum",
            name="d",
        ),
        L.JaccardLoss(mode="binary", from_logits=True),
        L.TverskyLoss(alpha=0.2, beta=0.8, classes=[1]),
        L.FocalTverskyLoss(alpha=0.4, beta=0.6, gamma=1.5, per_image=True),
        L.FocalLoss(mode="multiclass", alpha=[0.5, 1.0, 2.0], gamma=1.0, from_logits=True),
        L.FocalLoss(mode="binary", alpha=0.25, ignore_label=-1),
        L.CrossEntropyLoss(mode="multilabel", ignore_label=255, reduction=None),
        L.LovaszLoss(classes=[0, 3], per_image=True, from_logits=True, ignore_label=11),
        L.LovaszLoss(mode="binary", classes="all"),
        L.WeightedSum(
            [
                (L.DiceLoss(), 0.5),
                (L.WeightedSum([(L.FocalLoss(), 1.0), (L.LovaszLoss(), 2.0)]), 1.5),
                (keras.losses.SparseCategoricalCrossentropy(ignore_class=255), 1.0),
            ]
        ),
    ]


@pytest.mark.parametrize("loss", every_loss(), ids=lambda x: type(x).__name__)
def test_get_config_round_trip(loss):
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


def test_combined_loss_is_weighted_sum():
    labels, logits = multiclass_case(ignore=255, seed=16)
    dice = L.DiceLoss(from_logits=True, ignore_label=255)
    focal = L.FocalLoss(from_logits=True, ignore_label=255)
    combined = L.CombinedLoss([(dice, 1.0), (focal, 0.25)])
    assert L.CombinedLoss is L.WeightedSum
    expected = value(dice(labels, logits)) + 0.25 * value(focal(labels, logits))
    assert value(combined(labels, logits)) == pytest.approx(expected, rel=1e-6)


def test_compiled_model_save_and_load_round_trip(tmp_path):
    """A model compiled with these losses and metrics survives keras.saving.load_model."""
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(4, 16, 16)).astype("int32")
    labels[:, :2] = 255
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    loss = L.WeightedSum(
        [
            (L.DiceLoss(ignore_label=255), 1.0),
            (L.CrossEntropyLoss(ignore_label=255), 1.0),
            (
                L.WeightedSum(
                    [
                        (L.FocalLoss(alpha=[1.0, 2.0, 1.0], ignore_label=255), 1.0),
                        (L.LovaszLoss(ignore_label=255, per_image=True), 0.5),
                    ]
                ),
                0.5,
            ),
            (L.JaccardLoss(ignore_label=255), 0.1),
            (L.TverskyLoss(ignore_label=255), 0.1),
            (L.FocalTverskyLoss(ignore_label=255), 0.1),
        ]
    )
    metrics = [
        M.MeanIoU(3, ignore_label=255),
        M.DiceScore(3, ignore_label=255, classes=[1, 2]),
        M.PixelAccuracy(3, ignore_label=255),
        M.VRand(foreground_class=1),
        M.VInfo(foreground_class=1, convention="isbi2012"),
    ]
    model.compile(optimizer="adam", loss=loss, metrics=metrics)
    model.fit(images, labels, epochs=1, batch_size=2, verbose=0)
    before = model.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is L.WeightedSum
    assert loaded.loss.get_config() == model.loss.get_config()
    after = loaded.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
    assert set(after) == set(before)
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-6), key
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6
    )
