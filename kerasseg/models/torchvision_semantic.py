"""torchvision's DeepLabV3 and FCN on a dilated ResNet-50/101, in Keras, numerically faithful.

References:
    Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
    Segmentation", 2017, arXiv:1706.05587 (DeepLabV3).
    Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
    CVPR 2015, arXiv:1411.4038 (FCN).
    The layout is torchvision's `models/segmentation/{deeplabv3,fcn,_utils}.py`, so its
    public checkpoints (`DeepLabV3_ResNet50_Weights`, `FCN_ResNet101_Weights`, ...) load
    through `kerasseg.convert.torchvision_semantic`.

The network, as torchvision's `deeplabv3_resnet50` / `fcn_resnet101` build it:

- Backbone: torchvision's ResNet (`kerasseg.models.torchvision_resnet`) with
  ``replace_stride_with_dilation=(False, True, True)``: layer3 and layer4 keep stride 8 and
  are dilated (2 and 4), so the features are at output stride 8. Batch norms are torch's
  `nn.BatchNorm2d` (epsilon 1e-5, Keras momentum 0.9 for torch's 0.1).
- DeepLabV3 head (`DeepLabHead`): ASPP with a 1x1 branch, three 3x3 branches dilated 12,
  24 and 36 and an image pooling branch (global average, 1x1 conv, BN, ReLU, broadcast
  back: torchvision's bilinear `F.interpolate` from a 1x1 map is a broadcast), each of 256
  channels; concatenation, 1x1 projection + BN + ReLU + Dropout(0.5); then a 3x3 conv of
  256 + BN + ReLU and the 1x1 classifier.
- FCN head (`FCNHead`): a 3x3 conv to in/4 channels + BN + ReLU + Dropout(0.1) and the 1x1
  classifier.
- Auxiliary classifier (``aux_loss=True``): an FCN head on layer3 (1024 channels), a
  second output "aux" (torchvision's ``result["aux"]``) for the auxiliary training loss.
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
``classifier_4``, ``aux_classifier_0``...); the converter relies on them.
"""

import keras
from keras import layers

from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import check_common_arguments
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
    "PREPROCESSING",
    "REPLACE_STRIDE_WITH_DILATION",
    "deeplab_head",
    "deeplabv3_torchvision",
    "fcn_head",
    "fcn_torchvision",
    "preprocessing_rule",
]

BACKBONES = {"resnet50": 50, "resnet101": 101}
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


def _check_backbone(backbone):
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        hint = did_you_mean(str(backbone), BACKBONES)
        raise ValueError(f"`backbone` must be one of {tuple(BACKBONES)}; got {backbone!r}.{hint}")
    return BACKBONES[backbone]


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
    depth = _check_backbone(backbone)
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
    features = resnet_stages(
        x,
        depth,
        "batch",
        BATCH_NORM_EPSILON,
        replace_stride_with_dilation=REPLACE_STRIDE_WITH_DILATION,
    )

    def finish(logits, prefix, output_name):
        logits = ResizeLike(align_corners=False, name=f"{prefix}_upsample")([logits, x])
        if resize_shorter_side is not None:
            logits = ResizeLike(align_corners=False, name=f"{prefix}_resize_back")([logits, images])
        return layers.Activation(activation or "linear", dtype="float32", name=output_name)(logits)

    outputs = finish(head(features[3], num_classes, "classifier"), "classifier", "output")
    if aux_loss:
        aux = finish(
            fcn_head(features[2], num_classes, "aux_classifier"), "aux_classifier", AUX_OUTPUT
        )
        outputs = {"output": outputs, AUX_OUTPUT: aux}
    return SegmentationModel(
        images, outputs, name=name or f"{family}_{backbone}", size_divisor=1, min_size=1
    )


@register_model(
    "deeplabv3_torchvision",
    task="semantic",
    description="DeepLabV3 as torchvision builds it: ASPP on a dilated ResNet-50/101",
    reference="Chen et al. 2017, arXiv:1706.05587; torchvision deeplabv3_resnet50/101",
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
    """Build torchvision's DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) on ResNet-50/101.

    torchvision's `deeplabv3_resnet50` / `deeplabv3_resnet101`: the ResNet with layer3 and
    layer4 dilated (output stride 8), `DeepLabHead` (ASPP rates 12, 24, 36) and bilinear
    resizing of the logits to the input size (see the module docstring). Its checkpoints
    load with `kerasseg.convert.torchvision_semantic.semantic_weights`.

    Args:
        num_classes: output channels (default 21: the Pascal VOC classes, background first,
            of torchvision's COCO_WITH_VOC_LABELS_V1 checkpoints).
        input_shape: (height, width, channels); height and width may be None. Any size of
            at least 1 works.
        backbone: "resnet50" (default) or "resnet101".
        aux_loss: if True, add torchvision's auxiliary FCN head on layer3 as a second
            output "aux" (its checkpoints hold its weights; it serves an auxiliary training
            loss); the model then returns a dict {"output", "aux"}.
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
        backbone: as `deeplabv3_torchvision`.
        aux_loss: as `deeplabv3_torchvision`.
        include_preprocessing: as `deeplabv3_torchvision`.
        resize_shorter_side: as `deeplabv3_torchvision`.
        activation: as `deeplabv3_torchvision`.
        name: model name (default "fcn_<backbone>", torchvision's builder name).

    Returns:
        A `SegmentationModel` as `deeplabv3_torchvision` returns.
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
