import urllib.request

import keras
import numpy as np
import pytest

import kerasseg
from kerasseg.models.encoders import ENCODERS, _application, adapt_first_conv_kernel, build_encoder
from kerasseg.preprocessing import ImagePreprocessing

# Published widths of the bottleneck (stride 32) feature of each network.
BOTTLENECK_CHANNELS = {
    "vgg16": 512,
    "vgg19": 512,
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "resnet50_v2": 2048,
    "resnet101_v2": 2048,
    "resnet152_v2": 2048,
    "mobilenet_v2": 1280,
    "mobilenet_v3_small": 576,
    "mobilenet_v3_large": 960,
    "efficientnet_b0": 1280,
    "efficientnet_b1": 1280,
    "efficientnet_b2": 1408,
    "efficientnet_b3": 1536,
    "efficientnet_b4": 1792,
    "efficientnet_b5": 2048,
    "efficientnet_b6": 2304,
    "efficientnet_b7": 2560,
    "efficientnet_v2_b0": 1280,
    "efficientnet_v2_b1": 1280,
    "efficientnet_v2_b2": 1408,
    "efficientnet_v2_b3": 1536,
    "efficientnet_v2_s": 1280,
    "efficientnet_v2_m": 1280,
    "efficientnet_v2_l": 1280,
    "densenet121": 1024,
    "densenet169": 1664,
    "densenet201": 1920,
    "convnext_tiny": 768,
    "convnext_small": 768,
    "convnext_base": 1024,
}
# Full tap widths (strides 2..32) of the classic networks.
TAP_CHANNELS = {
    "vgg16": [128, 256, 512, 512, 512],
    "resnet18": [64, 64, 128, 256, 512],
    "resnet34": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "resnet50_v2": [64, 256, 512, 1024, 2048],
    "mobilenet_v2": [96, 144, 192, 576, 1280],
    "densenet121": [64, 256, 512, 1024, 1024],
    "convnext_tiny": [96, 192, 384, 768],
}
REQUIRED = {
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet50_v2",
    "resnet101_v2",
    "resnet152_v2",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    *(f"efficientnet_b{i}" for i in range(8)),
    *(f"efficientnet_v2_{s}" for s in ("b0", "b1", "b2", "b3", "s", "m", "l")),
    "densenet121",
    "densenet169",
    "densenet201",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
}


def test_every_required_encoder_is_listed():
    assert REQUIRED <= set(ENCODERS)
    assert set(BOTTLENECK_CHANNELS) == set(ENCODERS)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_tap_shapes(name):
    encoder, present = build_encoder(name, (64, 96, 3))
    features = encoder(np.zeros((1, 64, 96, 3), "float32"))
    strides = [s for s, p in zip((2, 4, 8, 16, 32), present, strict=True) if p]
    assert len(features) == len(strides)
    assert present[1:] == [True] * 4  # strides 4..32 always exist; 2 for all but ConvNeXt
    assert present[0] == (not name.startswith("convnext"))
    for feature, stride in zip(features, strides, strict=True):
        assert tuple(feature.shape[1:3]) == (64 // stride, 96 // stride), (name, stride)
    assert features[-1].shape[-1] == BOTTLENECK_CHANNELS[name]
    if name in TAP_CHANNELS:
        assert [f.shape[-1] for f in features] == TAP_CHANNELS[name]


def _random_weights_file(name, tmp_path):
    network = _application(ENCODERS[name], (None, None, 3), None)
    for layer in network.layers:  # non-trivial BN statistics, so they are checked too
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.uniform(-1, 1, layer.moving_mean.shape))
            layer.moving_variance.assign(np.random.uniform(0.5, 2, layer.moving_variance.shape))
    path = tmp_path / f"{name}.weights.h5"
    network.save_weights(path)
    return str(path)


@pytest.mark.parametrize(
    "name",
    [
        "resnet50",
        "mobilenet_v2",
        "efficientnet_b0",
        "densenet121",
        "mobilenet_v3_small",
        "convnext_tiny",
        "vgg16",
    ],
)
def test_one_channel_encoder_equals_rgb_encoder_on_repeated_grey(name, tmp_path):
    path = _random_weights_file(name, tmp_path)
    rgb, _ = build_encoder(name, (None, None, 3), weights=path)
    grey, _ = build_encoder(name, (None, None, 1), weights=path)
    z = np.random.uniform(-1, 1, (2, 64, 64, 1)).astype("float32")
    for a, b in zip(grey(z), rgb(np.repeat(z, 3, axis=-1)), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


def test_many_channel_adaptation_follows_smp():
    kernel = np.random.rand(3, 3, 3, 8)
    five = adapt_first_conv_kernel(kernel, 5)
    assert five.shape == (3, 3, 5, 8)
    for c in range(5):
        np.testing.assert_allclose(five[:, :, c], kernel[:, :, c % 3] * 3 / 5)
    np.testing.assert_allclose(adapt_first_conv_kernel(kernel, 1)[:, :, 0], kernel.sum(axis=2))


def test_grey_unet_equals_rgb_unet_on_repeated_image(tmp_path):
    path = _random_weights_file("mobilenet_v2", tmp_path)
    kwargs = dict(
        encoder="mobilenet_v2", encoder_weights=path, num_classes=2, include_preprocessing=True
    )
    rgb = kerasseg.load("unet", input_shape=(None, None, 3), **kwargs)
    grey = kerasseg.load("unet", input_shape=(None, None, 1), **kwargs)
    for layer in rgb.layers:  # same decoder weights; the encoder came from the same file
        if layer.name != "encoder" and layer.weights:
            grey.get_layer(layer.name).set_weights(layer.get_weights())
    image = np.random.randint(0, 256, (2, 64, 64, 1)).astype("float32")
    expected = rgb.predict(np.repeat(image, 3, axis=-1), verbose=0)
    np.testing.assert_allclose(
        grey.predict(image, verbose=0), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max()
    )


def test_encoder_weights_path_is_loaded(tmp_path):
    path = _random_weights_file("resnet50", tmp_path)
    reference = _application(ENCODERS["resnet50"], (None, None, 3), None)
    reference.load_weights(path)
    model = kerasseg.load("unet", encoder="resnet50", encoder_weights=path)
    encoder = model.get_layer("encoder")
    np.testing.assert_array_equal(
        encoder.get_layer("conv1_conv").get_weights()[0],
        reference.get_layer("conv1_conv").get_weights()[0],
    )


def test_encoder_freeze():
    frozen = kerasseg.load("unet", encoder="mobilenet_v2", encoder_freeze=True)
    trainable = kerasseg.load("unet", encoder="mobilenet_v2")
    encoder_params = frozen.get_layer("encoder").count_params()
    decoder_trainable = sum(int(np.prod(w.shape)) for w in frozen.trainable_weights)
    assert not frozen.get_layer("encoder").trainable
    assert sum(int(np.prod(w.shape)) for w in trainable.trainable_weights) > decoder_trainable
    assert decoder_trainable < frozen.count_params() - encoder_params + 1
    x = np.random.rand(2, 64, 64, 3).astype("float32")
    y = np.random.rand(2, 64, 64, 1).astype("float32")
    before = frozen.get_layer("encoder").get_weights()
    frozen.compile(optimizer="adam", loss="mse")
    frozen.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(before, frozen.get_layer("encoder").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # BN statistics too: frozen BN runs in inference


def test_imagenet_download_failure_is_clear(monkeypatch, tmp_path):
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(urllib.request, "_opener", None)  # urllib caches proxies in it
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: offline
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(OSError, match=r"encoder_weights='imagenet'.*mobilenet_v3_small.*by hand"):
        kerasseg.load("unet", encoder="mobilenet_v3_small", encoder_weights="imagenet")


def test_unknown_encoder_lists_closest():
    with pytest.raises(ValueError, match=r"`encoder`: unknown encoder 'resnet5'.*resnet50"):
        kerasseg.load("unet", encoder="resnet5")


def test_encoder_unet_sizes():
    model = kerasseg.load("unet", encoder="resnet50", num_classes=4)
    assert model(np.zeros((1, 96, 64, 3), "float32")).shape == (1, 96, 64, 4)
    with pytest.raises(ValueError, match=r"multiples of 32.*\[64, 96\] instead of 80"):
        model(np.zeros((1, 80, 64, 3), "float32"))


# The normalisation each encoder's ImageNet weights expect, checked against keras.applications.
@pytest.mark.parametrize(
    "mode,reference",
    [
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
    ],
)
def test_preprocessing_matches_keras_applications(mode, reference):
    x = np.random.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        ImagePreprocessing(mode)(x), reference(x.copy()), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize(
    "constructor,mode",
    [
        (keras.applications.ConvNeXtTiny, "torch"),
        (keras.applications.EfficientNetV2B0, "torch"),
        (keras.applications.EfficientNetV2S, "efficientnet_v2"),
        (keras.applications.MobileNetV3Small, "tf"),
    ],
)
def test_preprocessing_matches_built_in_layers(constructor, mode):
    network = constructor(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=True
    )
    first_compute = next(
        layer
        for layer in network.layers
        if not isinstance(
            layer, keras.layers.InputLayer | keras.layers.Rescaling | keras.layers.Normalization
        )
        and "prestem" not in layer.name
    )
    x = np.random.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    inner = keras.Model(network.inputs[0], first_compute.input)
    np.testing.assert_allclose(ImagePreprocessing(mode)(x), inner(x), rtol=1e-5, atol=1e-4)


def test_preprocessing_for_other_channel_counts_averages_statistics():
    x = np.full((1, 2, 2, 1), 100.0, "float32")
    torch = np.asarray(ImagePreprocessing("torch")(x))
    mean, std = np.mean([0.485, 0.456, 0.406]), np.mean([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch, (100 / 255 - mean) / std, rtol=1e-5)
    caffe = np.asarray(ImagePreprocessing("caffe")(np.full((1, 2, 2, 4), 100.0, "float32")))
    np.testing.assert_allclose(caffe, 100 - np.mean([103.939, 116.779, 123.68]), rtol=1e-5)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        ImagePreprocessing("imagenet")


def test_registry_names_the_preprocessing():
    assert kerasseg.preprocessing_layer("unet", encoder="resnet50").mode == "caffe"
    assert kerasseg.preprocessing_layer("unet", encoder="efficientnet_v2_m").mode == (
        "efficientnet_v2"
    )
    assert kerasseg.preprocessing_layer("unet").mode == "unit"
    assert (
        kerasseg.preprocessing_layer("unet", encoder="vgg16", include_preprocessing=True).mode
        == "none"
    )


def test_mixed_precision_keeps_preprocessing_and_output_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = kerasseg.load("unet", encoder="mobilenet_v2", include_preprocessing=True)
        assert model.get_layer("preprocessing").compute_dtype == "float32"
        assert model.get_layer("head").compute_dtype == "bfloat16"
        y = model(np.random.uniform(0, 255, (1, 64, 64, 3)).astype("float32"))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
