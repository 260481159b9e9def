"""torchvision DeepLabV3 / FCN state dicts (ResNet-50/101, MobileNetV3-Large) -> Keras (numpy only).

The models are `kerasseg.models.torchvision_semantic`'s `deeplabv3_torchvision` and
`fcn_torchvision`, whose Keras layer names spell torchvision's module paths with "_" for "."
(`SEMANTIC_LAYER_MAP` for the ResNets, `MOBILENET_LAYER_MAP` for MobileNetV3-Large). A state
dict is a plain ``{key: numpy array}`` dict, as
`kerasseg.convert.torchvision.load_state_dict` reads it from torchvision's ``.pth`` files
without torch, e.g. ``deeplabv3_resnet50_coco-cd0a2569.pth``; the generic engine
`kerasseg.convert.torchvision.assign_weights` checks every key and shape before it assigns
anything.

torchvision's keys:

* ResNet: ``backbone.conv1``, ``backbone.bn1``, ``backbone.layer{s}.{b}.conv{k}`` /
  ``bn{k}`` / ``downsample.{0,1}`` (the ResNet without its ``fc``,
  `IntermediateLayerGetter`);
* MobileNetV3-Large (`deeplabv3_mobilenet_v3_large`): ``backbone.{i}....``, ``i`` from 0
  (the stem, ``backbone.0.0.weight``) to 16, the ``features`` of torchvision's
  `mobilenet_v3_large(dilated=True)`, mapped by the MobileNet converter's
  `kerasseg.convert.torchvision_mobilenet.BACKBONE_LAYER_MAP`;
* DeepLabV3: ``classifier.0.convs.{0..4}`` (ASPP branches; the pooling branch's conv and
  BN are ``convs.4.1`` and ``convs.4.2``), ``classifier.0.project.{0,1}``,
  ``classifier.1`` (3x3 conv), ``classifier.2`` (BN), ``classifier.4`` (classifier);
* FCN: ``classifier.0`` (3x3 conv), ``classifier.1`` (BN), ``classifier.4`` (classifier);
* with ``aux_loss``: ``aux_classifier.{0,1,4}``, an FCN head on layer3 (ResNet) or on
  ``backbone.4`` (MobileNetV3). torchvision's checkpoints hold it; a model without the
  auxiliary output skips exactly those keys.

BatchNorm ``num_batches_tracked`` counters are ignored. Backbone and heads are assigned in
one pass, so a state dict that does not fit leaves the whole model unchanged.
"""

import re

import keras
import numpy as np

from kerasseg.convert.torchvision import _leaf_layers, assign_weights
from kerasseg.convert.torchvision_mobilenet import BACKBONE_LAYER_MAP
from kerasseg.models.torchvision_semantic import AUX_OUTPUT, MOBILENET_BACKBONE

__all__ = [
    "AUX_PREFIX",
    "HEAD_LAYER_MAP",
    "MOBILENET_LAYER_MAP",
    "SEMANTIC_LAYER_MAP",
    "semantic_architecture",
    "semantic_num_classes",
    "semantic_weights",
]

AUX_PREFIX = "aux_classifier."
# Keras layer name (full match) -> torch module path. The heads, on either backbone:
HEAD_LAYER_MAP = (
    (r"classifier_0_convs_(\d+)_(\d+)", r"classifier.0.convs.\1.\2"),
    (r"classifier_0_project_(\d+)", r"classifier.0.project.\1"),
    (r"(aux_classifier|classifier)_(\d+)", r"\1.\2"),
)
SEMANTIC_LAYER_MAP = (
    (r"(conv1|bn1)", r"backbone.\1"),
    (r"layer(\d+)_(\d+)_(conv|bn)(\d+)", r"backbone.layer\1.\2.\3\4"),
    (r"layer(\d+)_(\d+)_downsample_([01])", r"backbone.layer\1.\2.downsample.\3"),
    *HEAD_LAYER_MAP,
)
MOBILENET_LAYER_MAP = (
    *((pattern, f"backbone.{template}") for pattern, template in BACKBONE_LAYER_MAP),
    *HEAD_LAYER_MAP,
)
# Blocks per ResNet stage -> backbone name; layer3 tells ResNet-50 (6) from ResNet-101 (23).
_STAGE_BLOCKS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}
_FAMILIES = {"deeplabv3": "deeplabv3_torchvision", "fcn": "fcn_torchvision"}
_CLASSIFIER = "classifier.4.weight"
# MobileNetV3-Large keys: the stem conv, and the last conv (features.16, to 960 channels).
_MOBILENET_STEM = "backbone.0.0.weight"
_MOBILENET_LAST = "backbone.16.0.weight"
_MOBILENET_MARKER = "features_0_0"  # the stem conv's Keras layer in the nested backbone


def _check_mapping(state_dict):
    if not isinstance(state_dict, dict):
        raise TypeError(f"`state_dict` must be a dict of arrays; got {type(state_dict).__name__}.")


def semantic_num_classes(state_dict):
    """The number of classes of a torchvision DeepLabV3 / FCN state dict.

    Args:
        state_dict: ``{key: numpy array}``.

    Returns:
        The row count of ``classifier.4.weight`` (the final 1x1 conv), an int.

    Raises:
        TypeError: `state_dict` is not a dict.
        ValueError: it has no ``classifier.4.weight``.
    """
    _check_mapping(state_dict)
    if _CLASSIFIER not in state_dict:
        raise ValueError(
            f"`state_dict` has no {_CLASSIFIER!r}: not a torchvision DeepLabV3 / FCN state dict "
            f"(first keys: {sorted(state_dict)[:5]})."
        )
    return int(np.asarray(state_dict[_CLASSIFIER]).shape[0])


def _stage_blocks(keys):
    """Blocks per ResNet stage (layer1..layer4) among ``backbone.layer{s}.{b}.conv3.weight``."""
    blocks = {s: set() for s in range(1, 5)}
    for key in keys:
        match = re.fullmatch(r"backbone\.layer([1-4])\.(\d+)\.conv3\.weight", key)
        if match:
            blocks[int(match[1])].add(int(match[2]))
    return tuple(len(b) for b in blocks.values())


def _mobilenet_backbone(state_dict, family):
    """The backbone name of a state dict with a MobileNet stem; a ValueError for a MobileNet
    torchvision builds no DeepLabV3 on, or for an FCN head on it."""
    if _MOBILENET_LAST not in state_dict:
        raise ValueError(
            f"`state_dict` has the MobileNet stem {_MOBILENET_STEM!r} but no "
            f"{_MOBILENET_LAST!r}: not the MobileNetV3-Large (``features.0`` .. ``16``) that "
            f"torchvision's deeplabv3_mobilenet_v3_large has."
        )
    if family != "deeplabv3":
        raise ValueError(
            "`state_dict` has a MobileNetV3 backbone but no 'classifier.0.convs.' (ASPP) keys: "
            "torchvision builds DeepLabV3 and LR-ASPP on MobileNetV3, no FCN; an LR-ASPP "
            "state dict loads with kerasseg.convert.torchvision_mobilenet.lraspp_weights."
        )
    return MOBILENET_BACKBONE


def semantic_architecture(state_dict):
    """The kerasseg architecture and builder arguments a torchvision state dict belongs to.

    DeepLabV3 when ``classifier.0.convs`` keys are present, FCN otherwise. The backbone is
    MobileNetV3-Large when the MobileNet stem ``backbone.0.0.weight`` is present, otherwise
    a ResNet told by its bottleneck blocks per stage (layer3: 6 for ResNet-50, 23 for
    ResNet-101).

    Args:
        state_dict: ``{key: numpy array}`` of torchvision's `deeplabv3_resnet50/101`,
            `fcn_resnet50/101` or `deeplabv3_mobilenet_v3_large`.

    Returns:
        ``(architecture, arguments)``, e.g. ``("deeplabv3_torchvision", {"backbone":
        "resnet50", "num_classes": 21, "aux_loss": True})``: ``kerasseg.load(architecture,
        **arguments)`` builds the model the state dict fits.

    Raises:
        TypeError: `state_dict` is not a dict.
        ValueError: it is not a torchvision DeepLabV3 / FCN on ResNet-50/101 or DeepLabV3 on
            MobileNetV3-Large state dict.
    """
    num_classes = semantic_num_classes(state_dict)
    family = "deeplabv3" if any(k.startswith("classifier.0.convs.") for k in state_dict) else "fcn"
    if _MOBILENET_STEM in state_dict:
        backbone = _mobilenet_backbone(state_dict, family)
    else:
        blocks = _stage_blocks(state_dict)
        if blocks not in _STAGE_BLOCKS:
            raise ValueError(
                f"`state_dict`: its backbone has {blocks} bottleneck blocks per stage "
                f"(``backbone.layer{{s}}.{{b}}.conv3``) and no MobileNet stem "
                f"({_MOBILENET_STEM!r}); torchvision's segmentation ResNets have "
                f"{' or '.join(str(b) for b in _STAGE_BLOCKS)} (ResNet-50, ResNet-101)."
            )
        backbone = _STAGE_BLOCKS[blocks]
    arguments = {
        "backbone": backbone,
        "num_classes": num_classes,
        "aux_loss": any(k.startswith(AUX_PREFIX) for k in state_dict),
    }
    return _FAMILIES[family], arguments


def _is_mobilenet(layer):
    """Whether `layer` is the nested MobileNetV3 "backbone" of a DeepLabV3 model."""
    return (
        isinstance(layer, keras.Model)
        and layer.name == "backbone"
        and any(inner.name == _MOBILENET_MARKER for inner in layer.layers)
    )


def _model_architecture(model):
    """(architecture, backbone, num_classes, aux) of a kerasseg torchvision DeepLabV3 / FCN."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    names = {layer.name for layer in model.layers}
    mobilenet = any(_is_mobilenet(layer) for layer in model.layers)
    if "classifier_4" not in names or not (mobilenet or "layer4_0_conv1" in names):
        raise ValueError(
            f"`model` must be a kerasseg `deeplabv3_torchvision` or `fcn_torchvision` model "
            f"(a layer 'classifier_4', and 'layer4_0_conv1' or a nested MobileNetV3 model "
            f"'backbone'); {model.name!r} is not."
        )
    family = "deeplabv3" if "classifier_0_convs_0_0" in names else "fcn"
    if mobilenet:
        backbone = MOBILENET_BACKBONE
    else:
        blocks = tuple(
            sum(1 for n in names if re.fullmatch(rf"layer{s}_\d+_conv1", n)) for s in range(1, 5)
        )
        backbone = _STAGE_BLOCKS.get(blocks, f"a ResNet with {blocks} blocks per stage")
    num_classes = int(model.get_layer("classifier_4").filters)
    return _FAMILIES[family], backbone, num_classes, AUX_OUTPUT in names


def semantic_weights(state_dict, model):
    """Load a torchvision DeepLabV3 / FCN state dict into a kerasseg model; all or nothing.

    Args:
        state_dict: ``{key: numpy array}`` (see `kerasseg.convert.torchvision.load_state_dict`)
            of torchvision's `deeplabv3_resnet50/101`, `fcn_resnet50/101` or
            `deeplabv3_mobilenet_v3_large`.
        model: a `deeplabv3_torchvision` / `fcn_torchvision` model of the same architecture,
            backbone and class count. With ``aux_loss=True`` the state dict must hold the
            ``aux_classifier`` weights; without, those keys are skipped.

    Returns:
        `model`, with the weights assigned.

    Raises:
        TypeError: `state_dict` is not a dict, `model` not a Keras model.
        ValueError: `state_dict` is for another architecture, backbone or class count, lacks
            the auxiliary head `model` has, or (listed by key) misses keys, has keys with the
            wrong shape or keys that feed no weight; nothing is assigned then.
    """
    _check_mapping(state_dict)
    architecture, backbone, num_classes, aux = _model_architecture(model)
    given, arguments = semantic_architecture(state_dict)
    if (given, arguments["backbone"]) != (architecture, backbone):
        raise ValueError(
            f"`state_dict` is a torchvision {given} {arguments['backbone']} state dict but "
            f"`model` is {architecture} on {backbone}; build the model with "
            f"kerasseg.load({given!r}, backbone={arguments['backbone']!r}, ...)."
        )
    if arguments["num_classes"] != num_classes:
        raise ValueError(
            f"`state_dict` is for {arguments['num_classes']} classes ({_CLASSIFIER} "
            f"{tuple(np.asarray(state_dict[_CLASSIFIER]).shape)}) but `model` has "
            f"{num_classes}; build it with num_classes={arguments['num_classes']}."
        )
    if aux and not arguments["aux_loss"]:
        raise ValueError(
            f"`model` has the auxiliary output {AUX_OUTPUT!r} but `state_dict` has no "
            f"{AUX_PREFIX!r} keys; build the model with aux_loss=False."
        )
    if not aux:  # the auxiliary head's keys, and only those, may go unused
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_PREFIX)}
    layer_map = MOBILENET_LAYER_MAP if backbone == MOBILENET_BACKBONE else SEMANTIC_LAYER_MAP
    assign_weights(state_dict, _leaf_layers(model), layer_map, "", owned_prefixes=("",))
    return model
