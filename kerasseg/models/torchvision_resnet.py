"""torchvision's ResNet body (stem and four stages) in Keras, numerically faithful to `resnet.py`.

ResNet v1.5 (He et al. 2016, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385; the stride sits on the 3x3 conv of the bottleneck, as torchvision's
`Bottleneck`), with torchvision's `replace_stride_with_dilation` for dilated ("atrous")
stages (Yu & Koltun 2016, arXiv:1511.07122; Chen et al. 2017, arXiv:1706.05587): a stage
whose stride is replaced keeps stride 1 and multiplies the dilation by 2; its first block
still uses the previous dilation, the following ones the new one, exactly as torchvision's
`ResNet._make_layer`. The 3x3 convs pad by their dilation, so a dilated stage keeps the
size of its input. The Mask R-CNN backbone (`kerasseg.models.maskrcnn.backbone`) and
torchvision's DeepLabV3 / FCN (`kerasseg.models.torchvision_semantic`) are built on it.

Numeric-parity rules (torchvision -> Keras):

* every strided conv / pool with padding uses an explicit `ZeroPadding2D` + "valid": Keras
  "same" pads (0, 1) on even sizes where torch pads (1, 1), which shifts the 7x7/2 stem conv,
  the 3x3/2 stem max-pool and the strided 3x3 bottleneck conv by a pixel (differences of
  order 1 in the outputs). Zero padding before the max-pool is safe because its input is
  post-ReLU (>= 0). Stride-1 convs whose torch padding is symmetric ("same" sized, dilated
  ones included) use Keras "same", which then pads the same way;
* frozen batch norm computes ``x * (w / sqrt(var + eps)) + (b - mean * w / sqrt(var + eps))``
  like `torchvision.ops.FrozenBatchNorm2d`; torchvision's detection weights (COCO v1 Mask
  R-CNN) need ``eps=0.0`` (`overwrite_eps(model, 0.0)`), torch's `nn.BatchNorm2d` and freshly
  built models use 1e-5 (Keras' default 1e-3 would change the outputs by percents where the
  running variances are small).

Keras layer names spell the torchvision state-dict keys with "_" for ".": ``conv1``/``bn1``
(stem), ``layer{s}_{b}_conv{k}``, ``layer{s}_{b}_bn{k}``, ``layer{s}_{b}_downsample_0``/``_1``;
the converters in `kerasseg.convert` and the saved presets rely on them.
"""

import keras
from keras import ops

from kerasseg.ops.checks import check_int, check_number

__all__ = [
    "CONV_INIT",
    "NORMS",
    "RESNET_DEPTHS",
    "FrozenBatchNorm",
    "batch_norm",
    "resnet_block",
    "resnet_stages",
    "torch_conv",
]

# depth -> (block kind, blocks per stage); torchvision resnet18/34/50/101/152.
RESNET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
NORMS = ("frozen", "batch")

# torchvision's ResNet conv initialisation, kaiming_normal_(mode="fan_out", relu), as a Keras
# initializer config (the Mask R-CNN heads use it too).
CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}


@keras.saving.register_keras_serializable(package="kerasseg")
class FrozenBatchNorm(keras.layers.Layer):
    """Batch norm with fixed statistics and affine parameters (torchvision `FrozenBatchNorm2d`).

    ``y = x * scale + shift`` with ``scale = gamma / sqrt(moving_variance + epsilon)`` and
    ``shift = beta - moving_mean * scale``, computed in that order like torchvision. All four
    per-channel variables are non-trainable; the layer behaves the same in training and
    inference. torchvision's COCO v1 Mask R-CNN weights expect ``epsilon=0.0``
    (`overwrite_eps(model, 0.0)`); freshly built torchvision models use 1e-5.

    Args:
        epsilon: float >= 0 added to the variance.
        axis: channel axis (default -1, NHWC).
    """

    def __init__(self, epsilon=0.0, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_number(epsilon, "epsilon", minimum=0)
        self.axis = check_int(axis, "axis", type_error=True)
        self.trainable = False

    def build(self, input_shape):
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(
                f"`input_shape`: the channel axis {self.axis} must be known, got {input_shape}"
            )
        shape = (int(channels),)
        self.gamma = self.add_weight(shape=shape, initializer="ones", trainable=False, name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="beta")
        self.moving_mean = self.add_weight(
            shape=shape, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=shape, initializer="ones", trainable=False, name="moving_variance"
        )

    def call(self, inputs, training=None):
        del training  # frozen: identical in training and inference
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        shift = self.beta - self.moving_mean * scale
        ndim = len(inputs.shape)
        axis = self.axis % ndim
        bshape = [1] * ndim
        bshape[axis] = -1
        scale = ops.cast(ops.reshape(scale, bshape), inputs.dtype)
        shift = ops.cast(ops.reshape(shift, bshape), inputs.dtype)
        return inputs * scale + shift

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "axis": self.axis}


def batch_norm(norm, eps, name):
    """A `FrozenBatchNorm` (``norm="frozen"``) or a Keras `BatchNormalization` ("batch")
    configured as torch's `nn.BatchNorm2d` with epsilon `eps`."""
    if norm == "frozen":
        return FrozenBatchNorm(epsilon=eps, name=name)
    # torch nn.BatchNorm2d momentum 0.1 weighs the new batch; Keras' momentum the old value.
    return keras.layers.BatchNormalization(epsilon=eps, momentum=0.9, name=name)


def torch_conv(
    x, filters, kernel, stride, name, padding=0, dilation=1, use_bias=False, init=CONV_INIT
):
    """A Keras Conv2D on `x` equal to torch's ``nn.Conv2d(kernel, stride, padding, dilation)``.

    Symmetric zero `padding` as torch: Keras "same" where that pads the same way (stride 1
    and ``2 * padding`` = the dilated kernel's extent - 1), else an explicit
    `ZeroPadding2D` named ``{name}_pad`` and "valid".
    """
    extent = dilation * (kernel - 1) + 1
    if padding and (stride > 1 or 2 * padding != extent - 1):
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        mode = "valid"
    else:
        mode = "same" if padding else "valid"
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=mode,
        dilation_rate=dilation,
        use_bias=use_bias,
        kernel_initializer=init,
        bias_initializer="zeros",
        name=name,
    )(x)


def resnet_block(x, kind, planes, stride, downsample, name, norm, eps, dilation=1):
    """torchvision `BasicBlock` ("basic") or `Bottleneck` (v1.5: the stride sits on the 3x3
    conv; `dilation` on the 3x3 convs, padded by it) on `x`; layers named ``{name}_...``."""
    relu = keras.layers.ReLU
    if kind == "basic":
        out = torch_conv(x, planes, 3, stride, f"{name}_conv1", padding=1)
        out = relu(name=f"{name}_relu1")(batch_norm(norm, eps, f"{name}_bn1")(out))
        out = torch_conv(out, planes, 3, 1, f"{name}_conv2", padding=1)
        out = batch_norm(norm, eps, f"{name}_bn2")(out)
        expansion = 1
    else:
        out = torch_conv(x, planes, 1, 1, f"{name}_conv1")
        out = relu(name=f"{name}_relu1")(batch_norm(norm, eps, f"{name}_bn1")(out))
        out = torch_conv(
            out, planes, 3, stride, f"{name}_conv2", padding=dilation, dilation=dilation
        )
        out = relu(name=f"{name}_relu2")(batch_norm(norm, eps, f"{name}_bn2")(out))
        out = torch_conv(out, planes * 4, 1, 1, f"{name}_conv3")
        out = batch_norm(norm, eps, f"{name}_bn3")(out)
        expansion = 4
    identity = x
    if downsample:
        identity = torch_conv(x, planes * expansion, 1, stride, f"{name}_downsample_0")
        identity = batch_norm(norm, eps, f"{name}_downsample_1")(identity)
    out = keras.layers.Add(name=f"{name}_add")([out, identity])
    return relu(name=f"{name}_out")(out)


def _check_dilation(replace_stride_with_dilation, kind):
    """`replace_stride_with_dilation` as a tuple of three bools, after checking it."""
    value = replace_stride_with_dilation
    if (
        not isinstance(value, tuple | list)
        or len(value) != 3
        or not all(isinstance(v, bool) for v in value)
    ):
        raise ValueError(
            "`replace_stride_with_dilation` must be three bools (for layer2, layer3, layer4), "
            f"got {value!r}"
        )
    if kind == "basic" and any(value):
        raise ValueError(
            f"`replace_stride_with_dilation`: ResNet-18/34 (BasicBlock) cannot be dilated, as "
            f"in torchvision; got {value!r} (use depth 50, 101 or 152)"
        )
    return tuple(value)


def resnet_stages(
    images, depth, norm="batch", eps=1e-5, replace_stride_with_dilation=(False, False, False)
):
    """The ResNet stem and its four stages on `images`, as torchvision's `ResNet` computes them.

    Args:
        images: the input tensor, NHWC, normalised as the weights expect.
        depth: one of `RESNET_DEPTHS` (18, 34, 50, 101, 152).
        norm: "batch" (`nn.BatchNorm2d`, torchvision's classification and segmentation
            ResNets) or "frozen" (`FrozenBatchNorm2d`, its detection backbones).
        eps: the norms' epsilon.
        replace_stride_with_dilation: three bools for layer2, layer3, layer4 (torchvision's
            argument): True keeps that stage at stride 1 and dilates it instead
            (DeepLabV3 / FCN: ``(False, True, True)``, output stride 8). Bottleneck depths
            only.

    Returns:
        [C2, C3, C4, C5]: the outputs of layer1..layer4 (strides 4, 8, 16, 32 without
        dilation; 4, 8, 8, 8 with ``(False, True, True)``).

    Raises:
        ValueError: an unknown `depth` or `norm`, or a bad `replace_stride_with_dilation`.
    """
    if isinstance(depth, bool) or depth not in RESNET_DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}")
    kind, blocks = RESNET_DEPTHS[depth]
    dilate = (False,) + _check_dilation(replace_stride_with_dilation, kind)
    expansion = 1 if kind == "basic" else 4
    x = torch_conv(images, 64, 7, 2, "conv1", padding=3)
    x = batch_norm(norm, eps, "bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # post-ReLU: zeros are safe
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)

    features = []
    inplanes, dilation = 64, 1
    stages = zip((64, 128, 256, 512), blocks, dilate, strict=True)
    for stage, (planes, count, dilated) in enumerate(stages, start=1):
        stride = 1 if stage == 1 else 2
        previous_dilation = dilation
        if dilated:  # torchvision `_make_layer(dilate=True)`
            dilation *= stride
            stride = 1
        for b in range(count):
            x = resnet_block(
                x,
                kind,
                planes,
                stride if b == 0 else 1,
                downsample=b == 0 and (stride != 1 or inplanes != planes * expansion),
                name=f"layer{stage}_{b}",
                norm=norm,
                eps=eps,
                dilation=previous_dilation if b == 0 else dilation,
            )
            inplanes = planes * expansion
        features.append(x)
    return features
