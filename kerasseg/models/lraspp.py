"""LR-ASPP on a dilated MobileNetV3-Large, torchvision's `lraspp_mobilenet_v3_large`.

Reference:
    Howard et al., "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244, Sec. 6.4 and
    Fig. 10 (Lite Reduced Atrous Spatial Pyramid Pooling). The layout follows torchvision's
    `models/segmentation/lraspp.py` (`LRASPP`, `LRASPPHead`, `_lraspp_mobilenetv3`), so its
    checkpoints convert by renaming (`kerasseg.convert.torchvision_mobilenet.lraspp_weights`).

The network: `kerasseg.models.mobilenet_v3.mobilenet_v3_large_features` (dilated) as the
nested model "backbone", giving "low" (stride 8, 40 channels) and "high" (stride 16, 960
channels), then the head ("classifier" in torchvision's state dict):

* ``cbr``: 1x1 convolution without bias to `inter_channels` (128), BatchNorm (epsilon
  1e-5, torch momentum 0.1), ReLU, on "high";
* ``scale``: global average pooling, 1x1 convolution without bias to `inter_channels`,
  sigmoid, on "high"; the two are multiplied;
* the product resized bilinearly (align_corners=False) to "low"'s size;
* ``low_classifier(low) + high_classifier(x)``, both 1x1 convolutions with bias;
* the logits resized bilinearly (align_corners=False) to the input size.

Keras layer names spell the torch keys with "_" for ".": ``classifier_cbr_0``,
``classifier_cbr_1``, ``classifier_scale_1``, ``classifier_low_classifier``,
``classifier_high_classifier``.

torchvision's preset transform (``SemanticSegmentation(resize_size=520)``) resizes each
image so its shorter side is 520 pixels before the model;
`kerasseg.models.resize.ResizeShorterSide` does the same
inside the model (``resize_shorter_side=520``), and the logits are resized back to the
input size, so a user gets a mask of the image's size.
"""

import keras
from keras import layers

from kerasseg.models.assembly import document_common_arguments
from kerasseg.models.base import SegmentationModel
from kerasseg.models.blocks import check_common_arguments
from kerasseg.models.mobilenet_v3 import mobilenet_v3_large_features
from kerasseg.models.resize import ResizeLike, ResizeShorterSide
from kerasseg.ops.checks import check_int, is_int
from kerasseg.preprocessing import ImagePreprocessing
from kerasseg.registry import register_model

__all__ = [
    "PREPROCESSING",
    "REFERENCE",
    "lraspp_head",
    "lraspp_torchvision",
    "preprocessing_rule",
]

REFERENCE = "Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244"

PREPROCESSING = "torch"  # ImageNet mean/std on 0..1 pixels, as torchvision's preset transform


def lraspp_head(low, high, num_classes, inter_channels=128):
    """torchvision's `LRASPPHead` on the "low" and "high" maps: logits at "low"'s size.

    Args:
        low: the stride-8 map (B, h, w, C_low).
        high: the stride-16 map (B, h', w', C_high).
        num_classes: output channels.
        inter_channels: channels of the ``cbr`` and ``scale`` branches (default 128).

    Returns:
        The logits, (B, h, w, num_classes).
    """
    x = layers.Conv2D(inter_channels, 1, use_bias=False, name="classifier_cbr_0")(high)
    # torch nn.BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Keras momentum 0.9).
    x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="classifier_cbr_1")(x)
    x = layers.ReLU(name="classifier_cbr_2")(x)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="classifier_scale_0")(high)
    s = layers.Conv2D(inter_channels, 1, use_bias=False, name="classifier_scale_1")(s)
    s = layers.Activation("sigmoid", name="classifier_scale_2")(s)
    x = layers.Multiply(name="classifier_gate")([x, s])
    x = ResizeLike(align_corners=False, name="classifier_upsample")([x, low])
    low_logits = layers.Conv2D(num_classes, 1, name="classifier_low_classifier")(low)
    high_logits = layers.Conv2D(num_classes, 1, name="classifier_high_classifier")(x)
    return layers.Add(name="classifier_add")([low_logits, high_logits])


def preprocessing_rule(arguments):
    """The `ImagePreprocessing` mode a `lraspp_torchvision(**arguments)` model's inputs need:
    "torch" (ImageNet mean/std on 0..1), or "none" with `include_preprocessing=True`."""
    return "none" if arguments.get("include_preprocessing") else PREPROCESSING


@document_common_arguments("lraspp")
@register_model(
    "lraspp_torchvision",
    task="semantic",
    description="LR-ASPP on a dilated MobileNetV3-Large, torchvision's lraspp_mobilenet_v3_large",
    reference="Howard et al. 2019, arXiv:1905.02244",
    num_classes=21,
    preprocessing=preprocessing_rule,
)
def lraspp_torchvision(
    num_classes=21,
    input_shape=(None, None, 3),
    inter_channels=128,
    encoder_freeze=False,
    activation=None,
    include_preprocessing=False,
    resize_shorter_side=None,
    name=None,
):
    """Build LR-ASPP on a dilated MobileNetV3-Large, as torchvision's `lraspp_mobilenet_v3_large`.

    Reference: Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244, Sec. 6.4;
    the layout of torchvision's `LRASPP` (see the module docstring), whose state dicts
    `kerasseg.convert.torchvision_mobilenet.lraspp_weights` loads.

    Args:
        num_classes: output channels (default 21: the Pascal VOC classes with background
            of torchvision's COCO_WITH_VOC_LABELS_V1 weights).
        input_shape: (height, width, channels); height and width may be None. Any size
            of at least 1 works.
        inter_channels: channels of the head's ``cbr`` and ``scale`` branches (default 128).
        encoder_freeze: if True, the MobileNetV3 backbone's weights are not trained.
        include_preprocessing: normalise inside the model (ImageNet mean/std of x / 255,
            `ImagePreprocessing("torch")`), so it takes 0..255 images; otherwise feed images
            normalised that way.
        resize_shorter_side: None (default: the model runs on the image as given) or an
            integer, e.g. 520 as torchvision's preset transform: the model resizes its input
            so the shorter side has that length (`ResizeShorterSide`: bilinear with
            antialias), runs, resizes the logits bilinearly to that resized size (as
            torchvision's model does) and then to the input size.
        name: model name (default "lraspp_mobilenet_v3_large").

    Returns:
        A `SegmentationModel` mapping (batch, H, W, C) images to (batch, H, W, num_classes).

    Raises:
        ValueError: `num_classes`, `inter_channels` or `resize_shorter_side` is not an
            integer >= 1 (None for the last), `input_shape` is not (height, width, channels)
            with None or positive integer sizes, or `activation` is not accepted.
    """
    check_common_arguments(num_classes, input_shape, activation)
    check_int(inter_channels, "inter_channels", 1)
    check_int(resize_shorter_side, "resize_shorter_side", 1, allow_none=True)
    input_shape = tuple(input_shape)
    for size in input_shape[:2]:
        if size is not None and (not is_int(size) or size < 1):
            raise ValueError(
                f"`input_shape`: height and width must be None or integers >= 1; got "
                f"{input_shape!r}."
            )

    images = keras.Input(input_shape, name="images")
    x = images
    if include_preprocessing:
        x = ImagePreprocessing(PREPROCESSING, name="preprocessing")(x)
    if resize_shorter_side is not None:
        x = ResizeShorterSide(resize_shorter_side, name="resize_shorter_side")(x)
    backbone = mobilenet_v3_large_features(x.shape[1:], dilated=True, name="backbone")
    backbone.trainable = not encoder_freeze
    features = backbone(x)
    logits = lraspp_head(features["low"], features["high"], num_classes, inter_channels)
    logits = ResizeLike(align_corners=False, name="head_upsample")([logits, x])
    if resize_shorter_side is not None:
        logits = ResizeLike(align_corners=False, name="resize_back")([logits, images])
    outputs = layers.Activation(activation or "linear", dtype="float32", name="output")(logits)
    return SegmentationModel(
        images, outputs, name=name or "lraspp_mobilenet_v3_large", size_divisor=1, min_size=1
    )
