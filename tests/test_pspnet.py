"""PSPNet (Zhao et al. 2017, arXiv:1612.01105) in the layout of smp, adaptive pooling."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomise_batch_norm

from kerasseg.models.pspnet import pspnet
from kerasseg.models.resize import AdaptiveAveragePooling2D, ResizeLike


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _bn(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


def mobilenet_v2_to_stride_8():
    """keras MobileNetV2 up to block_6_expand_relu (the stride-8 tap), from Table 2 of
    Sandler et al. 2018: conv 3x3 s2 -> 32; bottleneck t=1 -> 16; t=6: 2 x 24, 3 x 32; the
    1x1 expansion of the next block (32 -> 192). Convolutions without bias, each with BN."""
    total = _conv(3, 3, 32, False) + _bn(32)
    total += 9 * 32 + _bn(32) + _conv(1, 32, 16, False) + _bn(16)  # depthwise, project
    for cin, cout in [(16, 24), (24, 24), (24, 32), (32, 32), (32, 32)]:
        expanded = 6 * cin
        total += _conv(1, cin, expanded, False) + _bn(expanded)
        total += 9 * expanded + _bn(expanded)
        total += _conv(1, expanded, cout, False) + _bn(cout)
    return total + _conv(1, 32, 192, False) + _bn(192)


def independent_psp_decoder_count(channels, classes, bins=(1, 2, 3, 6), filters=512):
    branch = channels // len(bins)
    total = 0
    for b in bins:  # 1x1 conv per bin; the 1x1 bin has a bias and no BatchNorm (smp)
        total += _conv(1, channels, branch, True) if b == 1 else _conv(1, channels, branch, False)
        total += 0 if b == 1 else _bn(branch)
    concat = channels + len(bins) * branch
    total += _conv(1, concat, filters, False) + _bn(filters)
    return total + _conv(3, filters, classes)  # 3x3 head


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = pspnet(encoder="mobilenet_v2", num_classes=3, activation="softmax", pad_to_fit=True)
    randomise_batch_norm(m)
    return m


@pytest.fixture(scope="module")
def variant():
    keras.utils.set_random_seed(1)
    return pspnet(encoder="mobilenet_v2", num_classes=2, psp_filters=64, dropout=0)


def test_parameter_count_matches_the_design(model, variant):
    assert mobilenet_v2_to_stride_8() + independent_psp_decoder_count(192, 3) == (
        model.count_params()
    )
    assert mobilenet_v2_to_stride_8() + independent_psp_decoder_count(192, 2, filters=64) == (
        variant.count_params()
    )
    # The encoder stops at stride 8: nothing of MobileNetV2's later blocks is in the model.
    names = {w.path.split("/")[0] for w in model.weights}
    assert "block_6_expand" in names and "block_6_depthwise" not in names


@pytest.mark.parametrize("bins", [1, 2, 3, 6, 13])
def test_adaptive_pooling_equals_pytorch(bins):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(bins).normal(size=(2, 9, 11, 4)).astype("float32")
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x).permute(0, 3, 1, 2), bins)
    layer = AdaptiveAveragePooling2D(bins)
    np.testing.assert_allclose(
        np.asarray(layer(x)), expected.permute(0, 2, 3, 1).numpy(), atol=1e-6
    )
    traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 4))])
    np.testing.assert_allclose(
        traced(tf.constant(x)).numpy(), expected.permute(0, 2, 3, 1).numpy(), atol=1e-6
    )


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (6, 6)])
def test_resize_like_equals_pytorch_align_corners(size):
    torch = pytest.importorskip("torch")
    y = np.random.default_rng(0).normal(size=(2, *size, 4)).astype("float32")
    reference = np.zeros((2, 9, 11, 1), "float32")
    expected = torch.nn.functional.interpolate(
        torch.tensor(y).permute(0, 3, 1, 2), size=(9, 11), mode="bilinear", align_corners=True
    )
    np.testing.assert_allclose(
        np.asarray(ResizeLike()([y, reference])),
        expected.permute(0, 2, 3, 1).numpy(),
        atol=1e-5,
    )


def test_sizes_not_divisible_by_six_at_stride_8(variant):
    # 72 x 88 gives a 9 x 11 stride-8 map: the 2, 3 and 6 bins are uneven, adaptive pooling.
    assert variant.predict(np.zeros((1, 72, 88, 3), "float32"), verbose=0).shape == (1, 72, 88, 2)
    with pytest.raises(ValueError, match=r"`images`.*multiples of 8.*\[64, 72\] instead of 67"):
        variant(np.zeros((1, 67, 72, 3), "float32"))
    with pytest.raises(ValueError, match=r"`input_shape`.*multiples of 8"):
        pspnet(encoder="mobilenet_v2", input_shape=(67, 93, 3))


def test_global_context_reaches_the_far_corner(variant):
    # The 1x1 bin pools the whole map: a change in one corner moves the opposite corner.
    x = np.random.default_rng(1).uniform(0, 255, (1, 256, 256, 3)).astype("float32")
    changed = x.copy()
    changed[:, -32:, -32:] = 0
    a = np.asarray(variant(x, training=False))[0, :16, :16]
    b = np.asarray(variant(changed, training=False))[0, :16, :16]
    # Random-init logits are small (~1e-3); without the pooled context the change would not
    # reach here at all (the stride-8 encoder's receptive field is far smaller than 224 px).
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


def test_pad_to_fit_takes_odd_sizes(model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"encoder": None}, "`encoder` must name"),
        ({"encoder": "resnet49"}, r"`encoder`: unknown encoder 'resnet49'.*Closest"),
        ({"encoder_weights": 0}, "`encoder_weights` must be None, 'imagenet' or a path"),
        ({"encoder_depth": 2}, "`encoder_depth` must be 3, 4 or 5"),
        ({"bins": ()}, "`bins` must be a non-empty sequence"),
        ({"bins": (1, 0)}, "`bins` must be a non-empty sequence"),
        ({"psp_filters": 0}, "`psp_filters` must be an integer >= 1"),
        ({"dropout": -0.1}, r"`dropout` must be a number in \[0, 1\)"),
        ({"activation": "relu"}, "`activation` must be one of"),
        ({"input_shape": (4, 4, 3), "pad_to_fit": True}, "at least 5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pspnet(**kwargs)
