"""Pretrained networks as encoders: keras.applications' and torchvision's ResNet-18/34.

Each encoder is listed with the layers tapped for skip connections at strides 2, 4, 8 and
16, and the bottleneck at stride 32. A tap is a layer name (its output), "input:<name>" (the
input of that layer, for features whose producing layer has an auto-generated name), or
None: no feature at that stride (ConvNeXt's stem jumps straight to stride 4), or, for the
bottleneck, the network's output. The encoder is built without the network's own
preprocessing layers; `preprocessing` names the `ImagePreprocessing` mode its ImageNet
weights expect.

Input channels other than 3 with pretrained weights: the weights are loaded into a 3-channel
network and copied layer by layer into the C-channel one; the first convolution's kernel is
summed over RGB for 1 channel, or repeated cyclically and scaled by 3 / C otherwise, as
segmentation_models.pytorch does (`encoders/_utils.py: patch_first_conv`).

ResNet-18 and ResNet-34 (He et al. 2016, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385), the default encoders of segmentation_models.pytorch, are not in
keras.applications: they are built as torchvision builds them
(`kerasseg.models.torchvision_resnet.resnet_stages`: explicit padding, BatchNorm epsilon
1e-5), tapped where smp's `ResNetEncoder` is (the ReLU after `bn1` at stride 2, then the
outputs of layer1..layer4), and take torch's normalisation. Their `encoder_weights="imagenet"`
are torchvision's ImageNet checkpoints, downloaded, verified, converted and cached by
`kerasseg.public_weights`: `register_encoder_weights` names the checkpoint of an encoder
(`kerasseg.convert.encoder_weights` registers torchvision's, with their converter).
"""

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable

import keras
import numpy as np

from kerasseg.models.input_checks import check_spatial_size
from kerasseg.models.torchvision_resnet import RESNET_DEPTHS, resnet_stages
from kerasseg.public_weights import PublicWeights
from kerasseg.weights import load_weights_file

__all__ = [
    "ENCODERS",
    "ENCODER_WEIGHTS",
    "STRIDES",
    "EncoderSpec",
    "adapt_first_conv_kernel",
    "build_encoder",
    "check_encoder_arguments",
    "encoder_network",
    "encoder_preprocessing",
    "get_encoder_spec",
    "register_encoder_weights",
]

STRIDES = (2, 4, 8, 16, 32)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """One encoder: how its network is built, its taps and preprocessing mode.

    Attributes:
        name: the encoder's name in `ENCODERS`.
        constructor: the keras.applications constructor's name ("ResNet50"), or, for a
            network made by `build`, the network's upstream name ("torchvision resnet34").
        taps: the five taps at strides 2, 4, 8, 16 and 32 (see the module docstring).
        preprocessing: the `ImagePreprocessing` mode its ImageNet weights expect.
        reference: the publication of the network.
        cut_before: drop the layers before this one (built-in preprocessing), or None.
        build: None for a keras.applications network; else ``build(input_shape)`` returning
            the whole network with random weights. Its ImageNet weights are then the
            `PublicWeights` registered with `register_encoder_weights`.
    """

    name: str
    constructor: str
    taps: tuple
    preprocessing: str
    reference: str
    cut_before: str | None = None
    build: Callable | None = dataclasses.field(default=None, repr=False)


def _resnet_taps(stage3, stage4, v2=False):
    if v2:
        return (
            "conv1_conv",
            "conv2_block3_preact_relu",
            f"conv3_block{stage3}_preact_relu",
            f"conv4_block{stage4}_preact_relu",
            "post_relu",
        )
    return (
        "conv1_relu",
        "conv2_block3_out",
        f"conv3_block{stage3}_out",
        f"conv4_block{stage4}_out",
        "conv5_block3_out",
    )


_EFFICIENTNET_TAPS = (
    "block2a_expand_activation",
    "block3a_expand_activation",
    "block4a_expand_activation",
    "block6a_expand_activation",
    "top_activation",
)
_EFFICIENTNET_V2_TAPS = (
    "input:block2a_expand_conv",
    "input:block3a_expand_conv",
    "block4a_expand_activation",
    "block6a_expand_activation",
    "top_activation",
)
_DENSENET_TAPS = ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu")

_RESNET = "He et al. 2016, Deep Residual Learning for Image Recognition"
_RESNET_V2 = "He et al. 2016, Identity Mappings in Deep Residual Networks"
_VGG = "Simonyan & Zisserman 2015, Very Deep Convolutional Networks"
_EFFICIENTNET = "Tan & Le 2019, EfficientNet"
_EFFICIENTNET_V2 = "Tan & Le 2021, EfficientNetV2"
_DENSENET = "Huang et al. 2017, Densely Connected Convolutional Networks"
_CONVNEXT = "Liu et al. 2022, A ConvNet for the 2020s"
_MOBILENET_V3 = "Howard et al. 2019, Searching for MobileNetV3"


def _torchvision_resnet(input_shape, depth):
    """torchvision's `resnet{depth}` without its pooling and classifier, outputs layer1..4."""
    images = keras.Input(input_shape)
    features = resnet_stages(images, depth, norm="batch", eps=1e-5)
    return keras.Model(images, features, name=f"resnet{depth}")


def _torchvision_resnet_spec(depth):
    # smp's ResNetEncoder features: the ReLU after bn1, then the last block of each stage.
    _, blocks = RESNET_DEPTHS[depth]
    taps = ("relu",) + tuple(f"layer{s}_{n - 1}_out" for s, n in enumerate(blocks, start=1))
    return EncoderSpec(
        f"resnet{depth}",
        f"torchvision resnet{depth}",
        taps,
        "torch",
        _RESNET,
        build=functools.partial(_torchvision_resnet, depth=depth),
    )


# The encoders named one by one; the families with many sizes follow in `_families`.
_NAMED = (
    EncoderSpec(
        "vgg16",
        "VGG16",
        ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool"),
        "caffe",
        _VGG,
    ),
    EncoderSpec(
        "vgg19",
        "VGG19",
        ("block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4", "block5_pool"),
        "caffe",
        _VGG,
    ),
    _torchvision_resnet_spec(18),
    _torchvision_resnet_spec(34),
    EncoderSpec("resnet50", "ResNet50", _resnet_taps(4, 6), "caffe", _RESNET),
    EncoderSpec("resnet101", "ResNet101", _resnet_taps(4, 23), "caffe", _RESNET),
    EncoderSpec("resnet152", "ResNet152", _resnet_taps(8, 36), "caffe", _RESNET),
    EncoderSpec("resnet50_v2", "ResNet50V2", _resnet_taps(4, 6, v2=True), "tf", _RESNET_V2),
    EncoderSpec("resnet101_v2", "ResNet101V2", _resnet_taps(4, 23, v2=True), "tf", _RESNET_V2),
    EncoderSpec("resnet152_v2", "ResNet152V2", _resnet_taps(8, 36, v2=True), "tf", _RESNET_V2),
    EncoderSpec(
        "mobilenet_v2",
        "MobileNetV2",
        (
            "block_1_expand_relu",
            "block_3_expand_relu",
            "block_6_expand_relu",
            "block_13_expand_relu",
            "out_relu",
        ),
        "tf",
        "Sandler et al. 2018, MobileNetV2",
    ),
    EncoderSpec(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        (
            "input:expanded_conv_depthwise_pad",
            "input:expanded_conv_1_depthwise_pad",
            "input:expanded_conv_3_depthwise_pad",
            "input:expanded_conv_8_depthwise_pad",
            None,
        ),
        "tf",
        _MOBILENET_V3,
    ),
    EncoderSpec(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        (
            "input:expanded_conv_1_depthwise_pad",
            "input:expanded_conv_3_depthwise_pad",
            "input:expanded_conv_6_depthwise_pad",
            "input:expanded_conv_12_depthwise_pad",
            None,
        ),
        "tf",
        _MOBILENET_V3,
    ),
)


def _families():
    """EfficientNet B0-B7, EfficientNetV2, DenseNet and ConvNeXt, one spec per size."""
    specs = [
        EncoderSpec(
            f"efficientnet_b{i}",
            f"EfficientNetB{i}",
            _EFFICIENTNET_TAPS,
            "efficientnet",
            _EFFICIENTNET,
            cut_before="stem_conv_pad",
        )
        for i in range(8)
    ]
    for suffix in ("b0", "b1", "b2", "b3", "s", "m", "l"):
        specs.append(
            EncoderSpec(
                f"efficientnet_v2_{suffix}",
                f"EfficientNetV2{suffix.upper()}",
                _EFFICIENTNET_V2_TAPS,
                # keras.applications normalises B0-B3 like torch, S/M/L to x / 128 - 1.
                "torch" if suffix.startswith("b") else "efficientnet_v2",
                _EFFICIENTNET_V2,
            )
        )
    for depth in (121, 169, 201):
        specs.append(
            EncoderSpec(f"densenet{depth}", f"DenseNet{depth}", _DENSENET_TAPS, "torch", _DENSENET)
        )
    for size in ("tiny", "small", "base"):
        prefix = f"convnext_{size}"
        taps = (None,) + tuple(f"input:{prefix}_downsampling_block_{i}" for i in range(3)) + (None,)
        specs.append(EncoderSpec(prefix, f"ConvNeXt{size.capitalize()}", taps, "torch", _CONVNEXT))
    return specs


# Every encoder by name.
ENCODERS = {spec.name: spec for spec in (*_NAMED, *_families())}
# The ImageNet checkpoint of each encoder built by its spec's `build` (its
# `encoder_weights="imagenet"`), filled by `register_encoder_weights`; None: none registered.
ENCODER_WEIGHTS = {name: None for name, spec in ENCODERS.items() if spec.build is not None}


def register_encoder_weights(name, weights):
    """Name the public checkpoint that `encoder_weights="imagenet"` loads for an encoder.

    Only for encoders that keras.applications lacks (a spec with `build`); keras.applications
    networks download their own weights.

    Args:
        name: the encoder's name in `ENCODERS`.
        weights: a `kerasseg.public_weights.PublicWeights` whose converter writes the
            `.weights.h5` of ``encoder_network(name)``, or None to remove it.

    Raises:
        ValueError: an unknown encoder or a keras.applications one.
        TypeError: `weights` is neither a `PublicWeights` nor None.
    """
    spec = get_encoder_spec(name)
    if spec.build is None:
        raise ValueError(
            f"`name`: encoder {name!r} is a keras.applications network, which loads its own "
            f"ImageNet weights; accepted: {sorted(ENCODER_WEIGHTS)}."
        )
    if weights is not None and not isinstance(weights, PublicWeights):
        raise TypeError(
            f"`weights` must be a kerasseg.public_weights.PublicWeights or None; got "
            f"{type(weights).__name__}."
        )
    ENCODER_WEIGHTS[name] = weights


def get_encoder_spec(name):
    """The `EncoderSpec` called `name`, or a ValueError listing the closest names."""
    if name not in ENCODERS:
        close = difflib.get_close_matches(str(name), list(ENCODERS), n=3, cutoff=0.4)
        hint = f" Closest: {close}." if close else ""
        raise ValueError(
            f"`encoder`: unknown encoder {name!r}.{hint} Accepted: {sorted(ENCODERS)}."
        )
    return ENCODERS[name]


def encoder_preprocessing(arguments):
    """The input normalisation of a model on an encoder, from its builder's `arguments`.

    The encoder's own normalisation (default encoder "resnet50"), or "none" when the model
    normalises inside (`include_preprocessing=True`).
    """
    if arguments.get("include_preprocessing"):
        return "none"
    return get_encoder_spec(arguments.get("encoder", "resnet50")).preprocessing


def _application(spec, input_shape, weights):
    """The whole network of `spec` for `input_shape`, with `weights` (see `build_encoder`)."""
    if spec.build is not None:
        network = spec.build(tuple(input_shape))
        if weights == "imagenet":
            weights = _public_weights_file(spec)
        if weights is not None:  # checked: every array must fit, nothing skipped
            load_weights_file(network, weights)
        return network
    constructor = getattr(keras.applications, spec.constructor)
    kwargs = {"include_top": False, "weights": weights, "input_shape": tuple(input_shape)}
    if "include_preprocessing" in inspect.signature(constructor).parameters:
        kwargs["include_preprocessing"] = False
    try:
        network = constructor(**kwargs)
    except Exception as error:  # keras raises plain Exception on download failures
        if weights != "imagenet" or not _is_download_error(error):
            raise
        raise OSError(
            f"`encoder_weights='imagenet'`: could not download the ImageNet weights of encoder "
            f"{spec.name!r} ({error}). Keras fetches them once into $KERAS_HOME/models "
            f"(default ~/.keras/models); on an offline machine, copy the keras.applications "
            f"'{spec.constructor}' no-top weights file there by hand, or pass its path as "
            f"`encoder_weights=`."
        ) from error
    return network


def _public_weights_file(spec):
    """The converted `.weights.h5` of the checkpoint registered for `spec`, fetched once."""
    weights = ENCODER_WEIGHTS.get(spec.name)
    if weights is None:
        raise ValueError(
            f"`encoder_weights='imagenet'`: no ImageNet checkpoint is registered for encoder "
            f"{spec.name!r}; `import kerasseg` registers torchvision's "
            f"(kerasseg.convert.encoder_weights), or pass the path of a converted weights "
            f"file as `encoder_weights=`."
        )
    try:
        return weights.fetch()
    except OSError as error:
        raise OSError(
            f"`encoder_weights='imagenet'`: the ImageNet weights of encoder {spec.name!r} are "
            f"not available. {error}"
        ) from error


def _is_download_error(error):
    # keras.utils.get_file raises a bare Exception("URL fetch failure on ...").
    return "URL fetch failure" in str(error) or isinstance(error, OSError)


def _tap_tensor(network, tap):
    if tap is None:
        return None
    if tap.startswith("input:"):
        return network.get_layer(tap.removeprefix("input:")).input
    return network.get_layer(tap).output


def adapt_first_conv_kernel(kernel, channels):
    """Adapt an RGB conv kernel (kh, kw, 3, out) to `channels` input channels.

    1 channel: the kernel summed over RGB; otherwise RGB repeated cyclically and scaled by
    3 / channels (segmentation_models.pytorch's `patch_first_conv`).
    """
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    rgb = kernel.shape[2]
    adapted = np.stack([kernel[:, :, i % rgb] for i in range(channels)], axis=2)
    return adapted * (rgb / channels)


def _transfer_weights(source, target, start=None):
    """Copy weights from a 3-channel network into the same network built for C channels.

    Layers before the one called `start` (built-in preprocessing that is cut off) are skipped.
    """
    first = [layer.name for layer in source.layers].index(start) if start else 0
    adapted = False
    for src_layer, dst_layer in zip(source.layers[first:], target.layers[first:], strict=True):
        src_weights = src_layer.get_weights()
        dst_weights = dst_layer.get_weights()
        new = []
        for s, d in zip(src_weights, dst_weights, strict=True):
            if s.shape != d.shape:
                if adapted or s.ndim != 4 or s.shape[:2] + s.shape[3:] != d.shape[:2] + d.shape[3:]:
                    raise ValueError(
                        f"cannot adapt encoder weights of layer {src_layer.name!r}: shape "
                        f"{s.shape} does not fit {d.shape}."
                    )
                s = adapt_first_conv_kernel(s, d.shape[2])
                adapted = True
            new.append(s)
        dst_layer.set_weights(new)


def encoder_network(name, input_shape=(None, None, 3), weights=None):
    """The whole network that encoder `name` taps, the one its weights files hold.

    Args:
        name: an encoder name from `ENCODERS`.
        input_shape: (height, width, channels).
        weights: None (random), "imagenet", or a path to the network's weights.

    Returns:
        The `keras.Model`: keras.applications' network without its top (and with
        `include_preprocessing=False` where the constructor takes it), or the network of
        the spec's `build` (outputs layer1..layer4 for the torchvision ResNets).
    """
    return _application(get_encoder_spec(name), input_shape, weights)


def build_encoder(name, input_shape=(None, None, 3), weights=None):
    """A multi-output keras.Model giving the features at strides 2, 4, 8, 16 and 32.

    Args:
        name: an encoder name from `ENCODERS`.
        input_shape: (height, width, channels); height and width may be None.
        weights: None (random), "imagenet", or a path to weights of the 3-channel
            `encoder_network` (keras.applications' network without its top; a
            `.weights.h5` for the torchvision ResNets).

    Returns:
        `(encoder, present)`: a `keras.Model` named "encoder" whose outputs are the features
        that exist, and five booleans saying which strides (2, 4, 8, 16, 32) have one.

    Raises:
        ValueError: an unknown encoder, or an `input_shape` that is not (height, width,
            channels) with known sizes multiples of 32.
        OSError: ImageNet weights that cannot be downloaded.
    """
    spec = get_encoder_spec(name)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels); got {input_shape}.")
    check_spatial_size(input_shape[:2], 32)
    channels = input_shape[-1]
    if weights is not None and channels != 3:
        source = _application(spec, input_shape[:2] + (3,), weights)
        network = _application(spec, input_shape, None)
        _transfer_weights(source, network, start=spec.cut_before)
    else:
        network = _application(spec, input_shape, weights)
    features = [_tap_tensor(network, tap) for tap in spec.taps[:4]]
    bottleneck = _tap_tensor(network, spec.taps[4]) if spec.taps[4] else network.output
    features.append(bottleneck)
    outputs = [f for f in features if f is not None]
    inputs = network.get_layer(spec.cut_before).input if spec.cut_before else network.inputs[0]
    encoder = keras.Model(inputs, outputs, name="encoder")
    return encoder, [f is not None for f in features]


def check_encoder_arguments(encoder, encoder_weights):
    """Check a builder's `encoder` and `encoder_weights` (None, "imagenet" or a path).

    Returns:
        The `EncoderSpec` of `encoder`.

    Raises:
        ValueError: `encoder` is None or unknown, or `encoder_weights` is not None or a
            string.
    """
    if encoder is None:
        raise ValueError(
            "`encoder` must name an encoder from `kerasseg.models.encoders.ENCODERS` (e.g. "
            "'resnet50'); got None."
        )
    spec = get_encoder_spec(encoder)
    if encoder_weights is not None and not isinstance(encoder_weights, str):
        raise ValueError(
            f"`encoder_weights` must be None, 'imagenet' or a path to a weights file; got "
            f"{encoder_weights!r}."
        )
    return spec
