"""LinkNet (Chaurasia & Culurciello 2017, arXiv:1707.03718) in the layout of smp."""

import keras
import numpy as np
import pytest
from conftest import randomise_batch_norm

from kerasseg.models.linknet import linknet

# MobileNetV2's features at strides 2, 4, 8, 16, 32 (Sandler et al. 2018, Table 2: the
# expansion widths 6 * (16, 24, 32, 96) and the last 1x1 conv's 1280).
MOBILENET_V2_TAPS = (96, 144, 192, 576, 1280)
# keras.applications MobileNetV2 (alpha 1.0): 3,538,984 parameters with its 1000-class top,
# a 1280 -> 1000 dense layer (https://keras.io/api/applications/mobilenet/).
MOBILENET_V2_NO_TOP = 3_538_984 - (1280 * 1000 + 1000)


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _bn(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


def independent_linknet_decoder_count(taps, classes, final=32, upsampling="transpose"):
    """Five blocks 1x1 (in/4) -> 2x up -> 1x1 (skip width), each conv-BN-ReLU, + 1x1 head."""
    widths = list(taps[::-1]) + [final]  # 1280 -> 576 -> 192 -> 144 -> 96 -> final
    total = 0
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        mid = cin // 4
        total += _conv(1, cin, mid, False) + _bn(mid)
        if upsampling == "transpose":  # 4x4 stride-2 transposed conv, with bias as smp
            total += _conv(4, mid, mid, True) + _bn(mid)
        else:  # nearest 2x, then 3x3 conv
            total += _conv(3, mid, mid, False) + _bn(mid)
        total += _conv(1, mid, cout, False) + _bn(cout)
    return total + _conv(1, final, classes)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = linknet(encoder="mobilenet_v2", num_classes=3, activation="softmax", pad_to_fit=True)
    randomise_batch_norm(m)
    return m


@pytest.fixture(scope="module")
def variant():
    keras.utils.set_random_seed(1)
    return linknet(encoder="mobilenet_v2", num_classes=1, upsampling="upsampling", final_filters=16)


def test_parameter_count_matches_the_design(model):
    expected = MOBILENET_V2_NO_TOP + independent_linknet_decoder_count(MOBILENET_V2_TAPS, 3)
    assert MOBILENET_V2_NO_TOP == 2_257_984
    assert model.count_params() == expected
    assert "Conv2DTranspose" in {type(layer).__name__ for layer in model.layers}


def test_parameter_count_upsampling_blocks(variant):
    expected = MOBILENET_V2_NO_TOP + independent_linknet_decoder_count(
        MOBILENET_V2_TAPS, 1, final=16, upsampling="upsampling"
    )
    assert variant.count_params() == expected
    names = {type(layer).__name__ for layer in variant.layers}
    assert "Conv2DTranspose" not in names and "UpSampling2D" in names


def test_skips_are_added_at_each_stride(variant):
    adds = [layer for layer in variant.layers if isinstance(layer, keras.layers.Add)]
    assert [layer.output.shape[-1] for layer in adds] == [576, 192, 144, 96]
    assert variant.get_layer("head").input.shape[-1] == 16


def test_pad_to_fit_takes_odd_sizes(model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 67, 93, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 67, 93, 3)
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-5)


def test_odd_sizes_without_pad_to_fit_are_refused(variant):
    with pytest.raises(ValueError, match=r"`input_shape`.*multiples of 32.*\[64, 96\]"):
        linknet(encoder="mobilenet_v2", input_shape=(67, 93, 3))
    with pytest.raises(ValueError, match=r"`images`.*multiples of 32"):
        variant(np.zeros((1, 67, 93, 3), "float32"))
    assert variant.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0).shape == (1, 64, 96, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"encoder": None}, "`encoder` must name"),
        ({"encoder": "mobilenetv2"}, r"`encoder`: unknown encoder 'mobilenetv2'.*Closest"),
        ({"encoder_weights": 1.0}, "`encoder_weights` must be None, 'imagenet' or a path"),
        ({"upsampling": "bilinear"}, r"`upsampling` must be one of \('transpose', 'upsampling'\)"),
        ({"final_filters": 0}, "`final_filters` must be an integer >= 1"),
        ({"activation": "tanh"}, "`activation` must be one of"),
        ({"num_classes": 1.5}, "`num_classes` must be an integer >= 1"),
        ({"input_shape": (None, None, None)}, "channel count"),
        ({"input_shape": (100, 96, 3)}, r"multiples of 32.*\[96, 128\] instead of 100"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        linknet(**kwargs)
