"""torchvision's DeepLabV3 and FCN (dilated ResNet, MobileNetV3) in Keras, numerically faithful.

References:
    Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
    Segmentation", 2017, arXiv:1706.05587 (DeepLabV3).
    Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
    CVPR 2015, arXiv:1411.4038 (FCN).
    Howard et al., "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244 (the
    MobileNetV3-Large backbone).
    The layout is torchvision's `models/segmentation/{deeplabv3,fcn,_utils}.py`, so its
    public checkpoints (`DeepLabV3_ResNet50_Weights`, `FCN_ResNet101_Weights`,
    `DeepLabV3_MobileNet_V3_Large_Weights`, ...) load through
    `kerasseg.convert.torchvision_semantic`.

The network, as torchvision's `deeplabv3_resnet50` / `fcn_resnet101` /
`deeplabv3_mobilenet_v3_large` build it:

- Backbone "resnet50" / "resnet101": torchvision's ResNet
  (`kerasseg.models.torchvision_resnet`) with ``replace_stride_with_dilation=(False, True,
  True)``: layer3 and layer4 keep stride 8 and are dilated (2 and 4), so the features are
  at output stride 8. Batch norms are torch's `nn.BatchNorm2d` (epsilon 1e-5, Keras
  momentum 0.9 for torch's 0.1). The heads take layer4 (2048 channels), the auxiliary
  head layer3 (1024 channels).
- Backbone "mobilenet_v3_large" (DeepLabV3 only; torchvision has no FCN on it):
  `kerasseg.models.mobilenet_v3.mobilenet_v3_large_features` (dilated) as the nested model
  "backbone", as LR-ASPP has it. The head takes "high" (``features.16``, 960 channels,
  stride 16), the auxiliary head "low" (``features.4``, 40 channels, stride 8), as
  torchvision's `_deeplabv3_mobilenetv3`.
- DeepLabV3 head (`DeepLabHead`): ASPP with a 1x1 branch, three 3x3 branches dilated 12,
  24 and 36 and an image pooling branch (global average, 1x1 conv, BN, ReLU, broadcast
  back: torchvision's bilinear `F.interpolate` from a 1x1 map is a broadcast), each of 256
  channels; concatenation, 1x1 projection + BN + ReLU + Dropout(0.5); then a 3x3 conv of
  256 + BN + ReLU and the 1x1 classifier.
- FCN head (`FCNHead`): a 3x3 conv to in/4 channels + BN + ReLU + Dropout(0.1) and the 1x1
  classifier.
- Auxiliary classifier (``aux_loss=True``): an FCN head on layer3 or "low", a second
  output "aux" (torchvision's ``result["aux"]``) for the auxiliary training loss.
  torchvision's checkpoints hold it; it does not change the main output.
- The logits are resized bilinearly (align_corners=False) to the network's input size, as
  torchvision's `_SimpleSegmentationModel.forward`.

Optionally the model includes torchvision's preset transform `SemanticSegmentation`
(``weights.transforms()``): ``resize_shorter_side=520`` resizes the image so its shorter
side is 520 (`kerasseg.models.lraspp.ResizeShorterSide`: bilinear with antialiasing, the
longer side ``int(520 * long / short)`` as torchvision's ``F.resize(img, [520])``), and
`include_preprocessing` normalises 0..255 images with the ImageNet mean and std of x / 255.
With a resize, the logits (at the resized size, as torchvision returns them) are resized
back bilinearly (align_corners=False) to the input's size, so the mask has the image's
size. torchvision resizes uint8 images in uint8 (rounded to integers); this model resizes
in float.

Keras layer names spell torchvision's state-dict keys with "_" for "." (``conv1``,
``layer3_5_conv2``, ``classifier_0_convs_1_0``, ``classifier_0_project_1``,
``classifier_4``, ``aux_classifier_0``...; the MobileNet's inside its nested model,
``features_4_block_2_fc1``...); the converter relies on them.
"""

import keras
from keras import layers

from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import check_common_arguments
from kerasseg.models.mobilenet_v3 import mobilenet_v3_large_features
from kerasseg.models.resize import BroadcastLike, ResizeLike, ResizeShorterSide
from kerasseg.models.torchvision_resnet import batch_norm, resnet_stages, torch_conv
from kerasseg.ops.checks import check_int, did_you_mean, is_int
from kerasseg.preprocessing import ImagePreprocessing
from kerasseg.registry import register_model

__all__ = [
    "ASPP_FILTERS",
    "ATROUS_RATES",
    "AUX_OUTPUT",
    "BACKBONES",
    "BATCH_NORM_EPSILON",
    "MOBILENET_BACKBONE",
    "PREPROCESSING",
    "REPLACE_STRIDE_WITH_DILATION",
    "RESNET_BACKBONES",
    "deeplab_head",
    "deeplabv3_torchvision",
    "fcn_head",
    "fcn_torchvision",
    "preprocessing_rule",
]

RESNET_BACKBONES = {"resnet50": 50, "resnet101": 101}  # name -> depth
MOBILENET_BACKBONE = "mobilenet_v3_large"
# The backbones torchvision builds each family on: no FCN on MobileNetV3.
BACKBONES = {
    "deeplabv3": (*RESNET_BACKBONES, MOBILENET_BACKBONE),
    "fcn": tuple(RESNET_BACKBONES),
}
REPLACE_STRIDE_WITH_DILATION = (False, True, True)  # output stride 8
ATROUS_RATES = (12, 24, 36)
ASPP_FILTERS = 256
BATCH_NORM_EPSILON = 1e-5  # torch nn.BatchNorm2d
PREPROCESSING = "torch"  # ImageNet mean/std on 0..1 pixels, torchvision's SemanticSegmentation
AUX_OUTPUT = "aux"

# torch's default Conv2d initialisation, kaiming_uniform_(a=sqrt(5)): uniform in
# +-1 / sqrt(fan_in). torchvision's segmentation heads keep it.
_HEAD_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


def _conv_bn_relu(x, filters, kernel, name, index, dilation=1):
    """Conv (no bias, torch padding) + BN + ReLU named ``{name}_{index}``, ``_{index + 1}``,
    ``_{index + 2}``, as the entries of a torch `nn.Sequential`."""
    x = torch_conv(
        x,
        filters,
        kernel,
        1,
        f"{name}_{index}",
        padding=dilation * (kernel // 2),
        dilation=dilation,
        init=_HEAD_INIT,
    )
    x = batch_norm("batch", BATCH_NORM_EPSILON, f"{name}_{index + 1}")(x)
    return layers.ReLU(name=f"{name}_{index + 2}")(x)


def _classifier(x, num_classes, name):
    return torch_conv(x, num_classes, 1, 1, name, use_bias=True, init=_HEAD_INIT)


def deeplab_head(x, num_classes, name="classifier"):
    """torchvision's `DeepLabHead`: ASPP, a 3x3 conv-BN-ReLU and the 1x1 classifier.

    Layers are named after the torch modules, ``{name}_0_convs_{i}_{k}`` (ASPP branches; the
    pooling branch is ``convs_4``: pool, conv, BN, ReLU), ``{name}_0_project_{k}``,
    ``{name}_1`` .. ``{name}_4``.

    Returns:
        The logits at the input's resolution (num_classes channels).
    """
    aspp = f"{name}_0"
    branches = [_conv_bn_relu(x, ASPP_FILTERS, 1, f"{aspp}_convs_0", 0)]
    for i, rate in enumerate(ATROUS_RATES, start=1):
        branches.append(_conv_bn_relu(x, ASPP_FILTERS, 3, f"{aspp}_convs_{i}", 0, rate))
    pooling = f"{aspp}_convs_{len(ATROUS_RATES) + 1}"
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{pooling}_0")(x)
    pooled = _conv_bn_relu(pooled, ASPP_FILTERS, 1, pooling, 1)
    branches.append(BroadcastLike(name=f"{pooling}_upsample")([pooled, x]))
    y = layers.Concatenate(name=f"{aspp}_concat")(branches)
    y = _conv_bn_relu(y, ASPP_FILTERS, 1, f"{aspp}_project", 0)
    y = layers.Dropout(0.5, name=f"{aspp}_project_3")(y)
    y = _conv_bn_relu(y, ASPP_FILTERS, 3, name, 1)
    return _classifier(y, num_classes, f"{name}_4")


def fcn_head(x, num_classes, name="classifier"):
    """torchvision's `FCNHead`: a 3x3 conv to a quarter of the channels, BN, ReLU,
    Dropout(0.1) and the 1x1 classifier; layers ``{name}_0`` .. ``{name}_4``.

    Returns:
        The logits at the input's resolution (num_classes channels).
    """
    y = _conv_bn_relu(x, x.shape[-1] // 4, 3, name, 0)
    y = layers.Dropout(0.1, name=f"{name}_3")(y)
    return _classifier(y, num_classes, f"{name}_4")


def preprocessing_rule(arguments):
    """The `ImagePreprocessing` mode the inputs of a model built with `arguments` need:
    "torch" (ImageNet mean/std on 0..1), or "none" with `include_preprocessing=True`."""
    return "none" if arguments.get("include_preprocessing") else PREPROCESSING


def _check_backbone(backbone, family):
    accepted = BACKBONES[family]
    if isinstance(backbone, str) and backbone in accepted:
        return
    if backbone == MOBILENET_BACKBONE:
        hint = (
            " torchvision builds no FCN on MobileNetV3: use deeplabv3_torchvision or "
            "lraspp_torchvision for MobileNetV3-Large."
        )
    else:
        hint = did_you_mean(str(backbone), accepted)
    raise ValueError(
        f"`backbone` of {family}_torchvision must be one of {accepted}; got {backbone!r}.{hint}"
    )


def _backbone_features(x, backbone):
    """The maps the head and the auxiliary head take: (layer4, layer3) of the dilated
    ResNet, ("high", "low") of the dilated MobileNetV3-Large."""
    if backbone == MOBILENET_BACKBONE:
        features = mobilenet_v3_large_features(x.shape[1:], dilated=True, name="backbone")(x)
        return features["high"], features["low"]
    features = resnet_stages(
        x,
        RESNET_BACKBONES[backbone],
        "batch",
        BATCH_NORM_EPSILON,
        replace_stride_with_dilation=REPLACE_STRIDE_WITH_DILATION,
    )
    return features[3], features[2]


def _segmentation_model(
    head,
    family,
    num_classes,
    input_shape,
    backbone,
    aux_loss,
    include_preprocessing,
    resize_shorter_side,
    activation,
    name,
):
    """torchvision's `_SimpleSegmentationModel` with `head` as its classifier."""
    check_common_arguments(num_classes, input_shape, activation)
    _check_backbone(backbone, family)
    if not isinstance(aux_loss, bool):
        raise TypeError(f"`aux_loss` must be True or False; got {aux_loss!r}.")
    check_int(resize_shorter_side, "resize_shorter_side", 1, allow_none=True)
    for size in input_shape[:2]:
        if size is not None and (not is_int(size) or size < 1):
            raise ValueError(
                f"`input_shape`: height and width must be None or integers >= 1; got "
                f"{input_shape!r}."
            )
    images = keras.Input(tuple(input_shape), name="images")
    x = images
    if resize_shorter_side is not None:
        x = ResizeShorterSide(resize_shorter_side, name="resize_shorter_side")(x)
    if include_preprocessing:
        x = ImagePreprocessing(PREPROCESSING, name="preprocessing")(x)
    high, low = _backbone_features(x, backbone)

    def finish(logits, prefix, output_name):
        logits = ResizeLike(align_corners=False, name=f"{prefix}_upsample")([logits, x])
        if resize_shorter_side is not None:
            logits = ResizeLike(align_corners=False, name=f"{prefix}_resize_back")([logits, images])
        return layers.Activation(activation or "linear", dtype="float32", name=output_name)(logits)

    outputs = finish(head(high, num_classes, "classifier"), "classifier", "output")
    if aux_loss:
        aux = finish(fcn_head(low, num_classes, "aux_classifier"), "aux_classifier", AUX_OUTPUT)
        outputs = {"output": outputs, AUX_OUTPUT: aux}
    return SegmentationModel(
        images, outputs, name=name or f"{family}_{backbone}", size_divisor=1, min_size=1
    )


@register_model(
    "deeplabv3_torchvision",
    task="semantic",
    description="DeepLabV3 as torchvision builds it: ASPP on a dilated ResNet-50/101 or "
    "MobileNetV3-Large",
    reference="Chen et al. 2017, arXiv:1706.05587; torchvision deeplabv3_resnet50/101, "
    "deeplabv3_mobilenet_v3_large",
    num_classes=21,
    preprocessing=preprocessing_rule,
)
def deeplabv3_torchvision(
    num_classes=21,
    input_shape=(None, None, 3),
    backbone="resnet50",
    aux_loss=False,
    include_preprocessing=False,
    resize_shorter_side=None,
    activation=None,
    name=None,
):
    """Build torchvision's DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) on ResNet or MobileNetV3.

    torchvision's `deeplabv3_resnet50` / `deeplabv3_resnet101`: the ResNet with layer3 and
    layer4 dilated (output stride 8); `deeplabv3_mobilenet_v3_large`: MobileNetV3-Large
    (Howard et al. 2019, arXiv:1905.02244) with its last stage dilated (output stride 16).
    Then `DeepLabHead` (ASPP rates 12, 24, 36) and bilinear resizing of the logits to the
    input size (see the module docstring). Its checkpoints load with
    `kerasseg.convert.torchvision_semantic.semantic_weights`.

    Args:
        num_classes: output channels (default 21: the Pascal VOC classes, background first,
            of torchvision's COCO_WITH_VOC_LABELS_V1 checkpoints).
        input_shape: (height, width, channels); height and width may be None. Any size of
            at least 1 works.
        backbone: "resnet50" (default), "resnet101" or "mobilenet_v3_large" (a nested
            model named "backbone").
        aux_loss: if True, add torchvision's auxiliary FCN head on layer3 (ResNet) or on
            the stride-8 "low" map (MobileNetV3) as a second output "aux" (its checkpoints
            hold its weights; it serves an auxiliary training loss); the model then returns
            a dict {"output", "aux"}.
        include_preprocessing: normalise inside the model (ImageNet mean/std of x / 255,
            `ImagePreprocessing("torch")`), so it takes 0..255 images; otherwise feed images
            normalised that way.
        resize_shorter_side: None (default: the model runs on the image as given) or an
            integer, e.g. 520 as torchvision's `weights.transforms()`: the model resizes its
            input so the shorter side has that length (antialiased bilinear, aspect ratio
            kept), runs, and resizes the logits back to the input size.
        activation: None (logits), "sigmoid" or "softmax".
        name: model name (default "deeplabv3_<backbone>", torchvision's builder name).

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes)
        logits; with `aux_loss`, a dict of two such maps, "output" and "aux" (torchvision's
        "out" and "aux").

    Raises:
        ValueError: an unknown `backbone`, `resize_shorter_side` not None or an integer
            >= 1, `input_shape` not (height, width, channels) with None or positive sizes,
            or `activation` not accepted.
        TypeError: `aux_loss` is not a bool.
    """
    return _segmentation_model(
        deeplab_head,
        "deeplabv3",
        num_classes,
        input_shape,
        backbone,
        aux_loss,
        include_preprocessing,
        resize_shorter_side,
        activation,
        name,
    )


@register_model(
    "fcn_torchvision",
    task="semantic",
    description="FCN as torchvision builds it: a 3x3 conv head on a dilated ResNet-50/101",
    reference="Long et al. 2015, arXiv:1411.4038; torchvision fcn_resnet50/101",
    num_classes=21,
    preprocessing=preprocessing_rule,
)
def fcn_torchvision(
    num_classes=21,
    input_shape=(None, None, 3),
    backbone="resnet50",
    aux_loss=False,
    include_preprocessing=False,
    resize_shorter_side=None,
    activation=None,
    name=None,
):
    """Build torchvision's FCN (Long et al. 2015, arXiv:1411.4038) on ResNet-50/101.

    torchvision's `fcn_resnet50` / `fcn_resnet101`: the ResNet with layer3 and layer4
    dilated (output stride 8), `FCNHead` (a 3x3 conv to 512 channels, BN, ReLU, dropout,
    the 1x1 classifier) and bilinear resizing of the logits to the input size (see the
    module docstring). Its checkpoints load with
    `kerasseg.convert.torchvision_semantic.semantic_weights`.

    Args:
        num_classes: as `deeplabv3_torchvision`.
        input_shape: as `deeplabv3_torchvision`.
        backbone: "resnet50" (default) or "resnet101"; torchvision builds no FCN on
            MobileNetV3 (`deeplabv3_torchvision` and `lraspp_torchvision` do).
        aux_loss: as `deeplabv3_torchvision`.
        include_preprocessing: as `deeplabv3_torchvision`.
        resize_shorter_side: as `deeplabv3_torchvision`.
        activation: as `deeplabv3_torchvision`.
        name: model name (default "fcn_<backbone>", torchvision's builder name).

    Returns:
        A `SegmentationModel` as `deeplabv3_torchvision` returns.

    Raises:
        ValueError, TypeError: as `deeplabv3_torchvision`.
    """
    return _segmentation_model(
        fcn_head,
        "fcn",
        num_classes,
        input_shape,
        backbone,
        aux_loss,
        include_preprocessing,
        resize_shorter_side,
        activation,
        name,
    )
