"""ResNet + FPN backbone of Mask R-CNN, numerically faithful to torchvision's `resnet_fpn_backbone`.

ResNet v1.5 (He et al. 2016, arXiv:1512.03385; stride on the 3x3 conv of the bottleneck, as
torchvision's `resnet.py`) feeding a Feature Pyramid Network (Lin et al. 2017,
arXiv:1612.03144; torchvision `ops/feature_pyramid_network.py`) with the `LastLevelMaxPool`
extra level. The model maps an ImageNet-normalized NHWC image batch to the five pyramid maps
P2..P6 (strides 4..64, 256 channels each).

The ResNet is `kerasseg.models.torchvision_resnet` (its docstring gives the padding and
frozen batch norm rules that make it match torchvision). The COCO v1 weights need the frozen
batch norm's ``eps=0.0``, since torchvision loads them with `overwrite_eps(model, 0.0)`
(with Keras' default 1e-3 the pyramid maps differ by about 65 %, with 1e-5 by about 1 %, as
their running variances are small). The rest of the numeric-parity rules (torchvision ->
Keras):

* the top-down pathway resizes to the lateral's size with torch's legacy "nearest" rule
  (``src = min(floor(dst * (in / out)), in - 1)`` in float32), so any input size, not only
  multiples of 32, gives torchvision's result. Mask R-CNN pads its batch to a multiple of 32,
  where this is an exact x2 repeat, and the extra level P6 (torchvision's `LastLevelMaxPool`,
  a max-pool with kernel 1 and stride 2) is a plain subsampling of P5.

Keras layer names spell the torchvision state-dict keys with "_" for ".":
``conv1``/``bn1`` (stem), ``layer{s}_{b}_conv{k}``, ``layer{s}_{b}_bn{k}``,
``layer{s}_{b}_downsample_0``/``_1`` (the ResNet's), ``fpn_inner_{i}``, ``fpn_layer_{i}`` (and
``fpn_inner_{i}_norm``/``fpn_layer_{i}_norm`` with ``fpn_norm="batch"``);
`kerasseg.convert.torchvision.backbone_weights` relies on them.
"""

import keras
from keras import ops

from kerasseg.models.torchvision_resnet import (
    CONV_INIT,
    NORMS,
    RESNET_DEPTHS,
    FrozenBatchNorm,
    batch_norm,
    resnet_stages,
    torch_conv,
)
from kerasseg.ops.checks import check_number

__all__ = [
    "CONV_INIT",
    "FPN_CHANNELS",
    "FPN_LEVELS",
    "NORMS",
    "RESNET_DEPTHS",
    "FrozenBatchNorm",
    "NearestResizeLike",
    "resnet_fpn_backbone",
]

FPN_LEVELS = ("P2", "P3", "P4", "P5", "P6")
FPN_CHANNELS = 256

# The FPN convs' initialisation, kaiming_uniform_(a=1), as a Keras initializer config.
_FPN_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_in", "distribution": "uniform"},
}


@keras.saving.register_keras_serializable(package="kerasseg")
class NearestResizeLike(keras.layers.Layer):
    """Resize ``x`` (NHWC) to the spatial size of ``reference`` with torch's legacy nearest rule.

    Equals ``torch.nn.functional.interpolate(x, size=reference.shape[-2:], mode="nearest")``:
    output index ``d`` reads input index ``min(floor(d * (in / out)), in - 1)``, the scale
    computed in float32 as torch's CPU kernel does. Called as ``layer([x, reference])``.
    """

    def call(self, inputs, training=None):
        del training
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"`inputs` must be [x, reference], got {type(inputs).__name__}")
        x, reference = inputs
        for axis in (1, 2):
            size_in = ops.shape(x)[axis]
            size_out = ops.shape(reference)[axis]
            scale = ops.divide(ops.cast(size_in, "float32"), ops.cast(size_out, "float32"))
            position = ops.multiply(ops.arange(size_out, dtype="float32"), scale)
            index = ops.minimum(ops.cast(ops.floor(position), "int32"), size_in - 1)
            x = ops.take(x, index, axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def _check_args(depth, norm, eps, trainable_layers, fpn_norm, input_shape):
    if isinstance(depth, bool) or depth not in RESNET_DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}")
    if fpn_norm not in (None, "batch"):
        raise ValueError(f"`fpn_norm` must be None or 'batch', got {fpn_norm!r}")
    check_number(eps, "eps", minimum=0, allow_none=True)
    if norm == "batch" and eps == 0:
        raise ValueError("`eps`: norm='batch' needs eps > 0 (training divides by the batch "
                         "variance); got 0.0. Use norm='frozen' for eps=0.0.")  # fmt: skip
    if isinstance(trainable_layers, bool) or trainable_layers not in range(6):
        raise ValueError(f"`trainable_layers` must be an int in [0, 5], got {trainable_layers!r}")
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(s is None or (isinstance(s, int) and s > 0) for s in input_shape)
        or input_shape[2] is None
    ):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive ints or None for "
            f"height/width and a known channel count, got {input_shape!r}"
        )


def resnet_fpn_backbone(
    depth=50,
    norm="frozen",
    eps=None,
    trainable_layers=3,
    input_shape=(None, None, 3),
    fpn_norm=None,
    name=None,
):
    """ResNet-FPN feature extractor as torchvision's `resnet_fpn_backbone` builds it.

    Args:
        depth: ResNet depth, one of 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
        norm: "frozen" (`FrozenBatchNorm`, torchvision's detection default) or "batch"
            (`keras.layers.BatchNormalization`, as the Mask R-CNN v2 backbone).
        eps: norm epsilon; None means 0.0 for "frozen" (what torchvision's COCO v1 weights
            need, `overwrite_eps(model, 0.0)`) and 1e-5 for "batch". Use 1e-5 with "frozen"
            to match a freshly built torchvision backbone or ImageNet-only weights.
        trainable_layers: 0..5, as torchvision: the number of ResNet stages, counted from
            layer4 down to the stem (conv1), whose weights train; 5 also trains the stem's
            bn1. The FPN always trains; `FrozenBatchNorm` never does. Note: a frozen Keras
            `BatchNormalization` (norm="batch", stage not trained) also stops updating its
            statistics and normalizes with them in training, whereas a torch BatchNorm2d with
            frozen parameters keeps using batch statistics in train mode.
        input_shape: (height, width, channels) of the NHWC input; height and width may be
            None. Any size works and matches torchvision (no multiple-of-32 requirement);
            Mask R-CNN pads to a multiple of 32, where the top-down upsampling is exactly x2.
        fpn_norm: None (v1: FPN convs with bias) or "batch" (v2: conv without bias +
            BatchNormalization(eps 1e-5) in every FPN block).
        name: model name, default "resnet{depth}_fpn".

    Returns:
        A functional `keras.Model` with input "images" (ImageNet-normalized float images,
        NHWC) and a dict output ``{"P2", "P3", "P4", "P5", "P6"}`` of 256-channel maps at
        strides 4, 8, 16, 32, 64 (torchvision's keys "0", "1", "2", "3", "pool").

    Example:
        >>> backbone = resnet_fpn_backbone(depth=50)  # doctest: +SKIP
        >>> features = backbone(images)  # dict, features["P2"] is (N, H/4, W/4, 256)
    """
    _check_args(depth, norm, eps, trainable_layers, fpn_norm, input_shape)
    if eps is None:
        eps = 0.0 if norm == "frozen" else 1e-5
    images = keras.Input(shape=tuple(input_shape), name="images")
    features = resnet_stages(images, depth, norm, eps)
    outputs = _feature_pyramid(features, fpn_norm)
    model = keras.Model(images, outputs, name=name or f"resnet{depth}_fpn")
    _freeze_stages(model, trainable_layers)
    return model


def _feature_pyramid(features, fpn_norm):
    """torchvision's FeaturePyramidNetwork + LastLevelMaxPool on C2..C5: {"P2": ..., "P6": ...}."""

    def fpn_conv(t, kernel, label, i):
        conv_name = f"fpn_{label}_{i}"
        t = torch_conv(
            t,
            FPN_CHANNELS,
            kernel,
            1,
            conv_name,
            padding=kernel // 2,
            use_bias=fpn_norm is None,
            init=_FPN_INIT,
        )
        if fpn_norm == "batch":
            t = batch_norm("batch", 1e-5, f"{conv_name}_norm")(t)
        return t

    last_inner = fpn_conv(features[-1], 1, "inner", 3)
    results = [fpn_conv(last_inner, 3, "layer", 3)]
    for i in (2, 1, 0):
        lateral = fpn_conv(features[i], 1, "inner", i)
        top_down = NearestResizeLike(name=f"fpn_upsample_{i}")([last_inner, lateral])
        last_inner = keras.layers.Add(name=f"fpn_add_{i}")([lateral, top_down])
        results.insert(0, fpn_conv(last_inner, 3, "layer", i))
    pool = keras.layers.MaxPooling2D(1, strides=2, padding="valid", name="fpn_pool")
    results.append(pool(results[-1]))  # LastLevelMaxPool: max_pool2d(P5, 1, 2)
    return {
        level: keras.layers.Identity(name=level)(t)
        for level, t in zip(FPN_LEVELS, results, strict=True)
    }


def _freeze_stages(model, trainable_layers):
    """Freeze the ResNet layers outside the `trainable_layers` last stages, as torchvision."""
    trained = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trained.append("bn1")
    # torchvision freezes the parameters whose names do not start with a trained prefix.
    for layer in model.layers:
        if layer.name.startswith("fpn_") or not layer.weights:
            continue
        in_trained = any(layer.name == t or layer.name.startswith(t + "_") for t in trained)
        layer.trainable = in_trained and not isinstance(layer, FrozenBatchNorm)
