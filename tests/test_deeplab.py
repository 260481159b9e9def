"""DeepLabV3 / DeepLabV3+ (arXiv:1706.05587, arXiv:1802.02611): structure, sizes, saving,
export, the dilated encoder and argument errors."""

import keras
import numpy as np
import pytest

from kerasseg.models.deeplab import deeplabv3, deeplabv3plus, dilated_encoder
from kerasseg.models.encoders import build_encoder
from kerasseg.models.resize import UpSamplingBilinear2D

# Published widths of the encoder features (stride 4, stride 32) of keras.applications.
CHANNELS = {"resnet50": (256, 2048), "mobilenet_v2": (144, 1280)}
# Published parameter counts of the networks without their top (include_top=False):
# ResNet50 23,587,712 and MobileNetV2 (alpha 1.0) 2,257,984.
ENCODER_PARAMS = {"resnet50": 23_587_712, "mobilenet_v2": 2_257_984}


def _conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def _sep(k, cin, cout):  # depthwise k x k + pointwise 1x1, no biases (smp's SeparableConv2d)
    return k * k * cin + cin * cout


def _bn(c):  # gamma, beta, moving mean, moving variance
    return 4 * c


def _aspp(cin, f, separable):
    atrous = _sep(3, cin, f) if separable else _conv(3, cin, f)
    return (
        _conv(1, cin, f)
        + _bn(f)
        + 3 * (atrous + _bn(f))
        + _conv(1, cin, f)  # image pooling branch
        + _bn(f)
        + _conv(1, 5 * f, f)  # projection
        + _bn(f)
    )


def v3_decoder_count(cin, classes, f=256, separable=False):
    return _aspp(cin, f, separable) + _conv(3, f, f) + _bn(f) + _conv(1, f, classes, bias=True)


def v3plus_decoder_count(c4, cin, classes, f=256, low=48, separable=True):
    conv3 = _sep if separable else (lambda k, a, b: _conv(k, a, b))
    return (
        _aspp(cin, f, separable)
        + conv3(3, f, f)
        + _bn(f)
        + _conv(1, c4, low)
        + _bn(low)
        + conv3(3, f + low, f)
        + _bn(f)
        + _conv(1, f, classes, bias=True)
    )


@pytest.fixture(scope="module")
def v3():
    keras.utils.set_random_seed(0)
    return deeplabv3(num_classes=3, encoder="resnet50")  # output stride 8


@pytest.fixture(scope="module")
def v3plus():
    keras.utils.set_random_seed(0)
    return deeplabv3plus(
        num_classes=3, encoder="mobilenet_v2", activation="softmax", pad_to_fit=True
    )


def test_deeplabv3_parameter_count(v3):
    _, c32 = CHANNELS["resnet50"]
    assert v3.count_params() == ENCODER_PARAMS["resnet50"] + v3_decoder_count(c32, 3)
    assert v3.size_divisor == 8


def test_deeplabv3plus_parameter_count(v3plus):
    c4, c32 = CHANNELS["mobilenet_v2"]
    expected = ENCODER_PARAMS["mobilenet_v2"] + v3plus_decoder_count(c4, c32, 3)
    assert v3plus.count_params() == expected


def test_non_separable_plus_and_options_change_the_count():
    model = deeplabv3plus(
        num_classes=2,
        encoder="mobilenet_v2",
        output_stride=8,
        separable=False,
        decoder_filters=32,
        low_level_filters=8,
    )
    c4, c32 = CHANNELS["mobilenet_v2"]
    expected = ENCODER_PARAMS["mobilenet_v2"] + v3plus_decoder_count(
        c4, c32, 2, f=32, low=8, separable=False
    )
    assert model.count_params() == expected
    assert model.get_layer("aspp_atrous3_conv").dilation_rate == (36, 36)
    assert model(np.zeros((1, 40, 24, 3), "float32")).shape == (1, 40, 24, 2)


def test_output_is_full_resolution_and_rates_follow_output_stride(v3, v3plus):
    assert v3(np.zeros((1, 64, 48, 3), "float32")).shape == (1, 64, 48, 3)
    assert v3.get_layer("aspp_atrous1_conv").dilation_rate == (12, 12)
    assert v3plus.get_layer("aspp_atrous1_conv").dilation_rate == (6, 6)
    # Deepest features at stride 8 (V3) and 16 (V3+): the encoder keeps them there.
    encoder = v3.get_layer("encoder")
    assert encoder(np.zeros((1, 64, 64, 3), "float32"))[-1].shape == (1, 8, 8, 2048)


def test_dilated_encoder_is_the_atrous_algorithm():
    """Sampled every 32 / output_stride pixels, the dilated ResNet50 equals the original."""
    keras.utils.set_random_seed(1)
    encoder, _ = build_encoder("resnet50", (None, None, 3))
    x = np.random.default_rng(0).random((1, 96, 128, 3)).astype("float32")
    reference = np.asarray(encoder(x)[-1])
    assert reference.shape == (1, 3, 4, 2048)
    for output_stride in (16, 8):
        dilated = dilated_encoder(encoder, output_stride)
        assert dilated.count_params() == encoder.count_params()
        deepest = np.asarray(dilated(x)[-1])
        step = 32 // output_stride
        assert deepest.shape == (1, 96 // output_stride, 128 // output_stride, 2048)
        np.testing.assert_allclose(deepest[:, ::step, ::step], reference, atol=1e-5)
        assert not np.allclose(deepest[:, 1::step, ::step], reference, atol=1e-3)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_bilinear_upsample_equals_keras_upsampling(factor):
    x = np.random.default_rng(factor).random((2, 5, 7, 3)).astype("float32")
    expected = keras.layers.UpSampling2D(factor, interpolation="bilinear")(x)
    np.testing.assert_allclose(
        UpSamplingBilinear2D(factor, align_corners=False)(x), expected, atol=1e-6
    )


def test_odd_sizes_with_pad_to_fit(v3plus):
    y = np.asarray(v3plus(np.random.rand(2, 67, 93, 3).astype("float32")))
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)
    assert v3plus.min_size == 9 and v3plus.size_divisor == 1


def test_odd_sizes_without_pad_to_fit_are_refused(v3):
    with pytest.raises(ValueError, match=r"`images`.*multiples of 8.*\[64, 72\] instead of 67"):
        v3(np.zeros((1, 67, 96, 3), "float32"))
    with pytest.raises(ValueError, match=r"`input_shape`.*multiples of 16.*\[80, 96\]"):
        deeplabv3plus(input_shape=(93, 96, 3), encoder="mobilenet_v2")


@pytest.mark.parametrize(
    "builder,kwargs,message",
    [
        (deeplabv3, {"output_stride": 32}, r"`output_stride` must be one of \(8, 16\); got 32"),
        (deeplabv3, {"output_stride": True}, r"`output_stride` must be one of"),
        (deeplabv3, {"atrous_rates": (6, 12)}, r"`atrous_rates` must be three integers"),
        (deeplabv3, {"atrous_rates": (6, 12, 0)}, r"`atrous_rates` must be three integers"),
        (deeplabv3, {"encoder": "resnet5"}, r"`encoder`: unknown encoder 'resnet5'.*resnet50"),
        (deeplabv3, {"encoder": None}, r"`encoder` must name an encoder from"),
        (deeplabv3, {"num_classes": 0}, r"`num_classes` must be an integer >= 1; got 0"),
        (deeplabv3, {"activation": "relu"}, r"`activation` must be one of"),
        (deeplabv3, {"aspp_dropout": 1.5}, r"`aspp_dropout` must be a number in \[0, 1\)"),
        (deeplabv3, {"decoder_filters": 0}, r"`decoder_filters` must be an integer >= 1"),
        (deeplabv3, {"encoder_weights": 3}, r"`encoder_weights` must be None, 'imagenet'"),
        (deeplabv3, {"input_shape": (64, 64)}, r"`input_shape` must be \(height, width"),
        (deeplabv3plus, {"low_level_filters": 0}, r"`low_level_filters` must be an integer"),
    ],
)
def test_bad_arguments(builder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        builder(**kwargs)
