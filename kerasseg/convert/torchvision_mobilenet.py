"""torchvision MobileNetV3-Large and LR-ASPP weights -> kerasseg Keras models (numpy only).

State dicts are plain ``{key: numpy array}`` dicts (`kerasseg.convert.torchvision.
load_state_dict` reads torchvision's ``.pth`` files without torch). Keys, for the models
this module serves:

* ``lraspp_mobilenet_v3_large``: ``backbone.{i}....`` (torchvision's
  `IntermediateLayerGetter` over ``mobilenet_v3_large(dilated=True).features``, so without
  "features") and ``classifier.{cbr,scale,low_classifier,high_classifier}....``;
* ``deeplabv3_mobilenet_v3_large``: the same ``backbone.{i}....`` keys, plus its
  ``classifier.`` and ``aux_classifier.`` heads (not this module's);
* ``mobilenet_v3_large`` (classification): ``features.{i}....`` (``prefix="features."``).

The Keras layers of `kerasseg.models.mobilenet_v3` and `kerasseg.models.lraspp` are named
after these keys ("_" for "."); `BACKBONE_LAYER_MAP` (relative to the backbone's prefix)
and `HEAD_LAYER_MAP` turn one into the other, and the generic engine
`kerasseg.convert.torchvision.assign_weights` moves the tensors (every key present, every
shape equal, nothing assigned otherwise).
"""

import keras
import numpy as np

from kerasseg.convert.torchvision import _leaf_layers, assign_weights

__all__ = [
    "BACKBONE_LAYER_MAP",
    "HEAD_LAYER_MAP",
    "lraspp_weights",
    "mobilenet_v3_backbone_weights",
]

# Keras layer name (full match) -> torch module path relative to the backbone's prefix.
BACKBONE_LAYER_MAP = (
    (r"features_(\d+)_(\d+)", r"\1.\2"),
    (r"features_(\d+)_block_(\d+)_(\d+)", r"\1.block.\2.\3"),
    (r"features_(\d+)_block_(\d+)_(fc1|fc2)", r"\1.block.\2.\3"),
)
# LR-ASPP head: Keras layer name -> torch module path (no prefix).
HEAD_LAYER_MAP = (
    (r"classifier_(cbr|scale)_(\d+)", r"classifier.\1.\2"),
    (r"classifier_(low|high)_classifier", r"classifier.\1_classifier"),
)


_BACKBONE_MARKER = "features_0_0"  # the stem conv: present in every MobileNetV3 features model


def _prefixed(layer_map, prefix):
    """`layer_map` with `prefix` put in front of each torch template."""
    escaped = prefix.replace("\\", "\\\\")  # a template's backslashes are group references
    return tuple((pattern, escaped + template) for pattern, template in layer_map)


def _assign(state_dict, layers, layer_map, owned_prefixes):
    """`assign_weights` on the layers that hold weights, with full torch paths in
    `layer_map`; all or nothing. Returns the keys consumed."""
    layers = [layer for layer in layers if layer.weights]
    return assign_weights(state_dict, layers, layer_map, "", owned_prefixes)


def _check_state_dict(state_dict):
    if not isinstance(state_dict, dict):
        raise TypeError(
            f"`state_dict` must be a dict of numpy arrays; got {type(state_dict).__name__}."
        )


def _find_backbone(model):
    """`model` if it is a MobileNetV3 features model, else the one nested model that is."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    names = {layer.name for layer in model.layers}
    if _BACKBONE_MARKER in names:
        return model
    found = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.Model)
        and any(inner.name == _BACKBONE_MARKER for inner in layer.layers)
    ]
    if len(found) != 1:
        raise ValueError(
            f"`model`: expected a `mobilenet_v3_large_features` model or a model holding "
            f"exactly one; found {len(found)} in {model.name!r}."
        )
    return found[0]


def mobilenet_v3_backbone_weights(state_dict, model, prefix="backbone."):
    """Load torchvision MobileNetV3-Large ``features`` weights into a backbone model.

    Args:
        state_dict: ``{key: numpy array}`` with keys such as ``backbone.0.0.weight``,
            ``backbone.4.block.2.fc1.bias``, ``backbone.16.1.running_var`` (a
            ``deeplabv3_mobilenet_v3_large`` or ``lraspp_mobilenet_v3_large`` state dict) or
            ``features.0.0.weight`` (``mobilenet_v3_large``, with ``prefix="features."``).
            Keys outside `prefix` are ignored; ``num_batches_tracked`` too.
        model: a `kerasseg.models.mobilenet_v3.mobilenet_v3_large_features` model, or a model
            that holds exactly one as a nested model.
        prefix: the prefix of the backbone's keys ("backbone." by default).

    Returns:
        The set of consumed `state_dict` keys, for a full-model converter to check for keys
        nobody consumed.

    Raises:
        TypeError: `state_dict` is not a dict, `prefix` not a str, `model` not a Keras model.
        ValueError: naming every backbone weight without a key, every shape mismatch and
            every key under `prefix` that fits no weight; nothing is assigned then.
    """
    _check_state_dict(state_dict)
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a str; got {type(prefix).__name__}.")
    backbone = _find_backbone(model)
    stem = f"{prefix}0.0.weight"
    if stem not in state_dict:
        found = sorted({key.split(".")[0] + "." for key in state_dict})
        raise ValueError(
            f"`state_dict` holds no {stem!r}: not a torchvision MobileNetV3 state dict with "
            f"prefix {prefix!r} (its keys start with {found[:10]})."
        )
    return _assign(
        state_dict, _leaf_layers(backbone), _prefixed(BACKBONE_LAYER_MAP, prefix), (prefix,)
    )


def lraspp_weights(state_dict, model):
    """Load a torchvision ``lraspp_mobilenet_v3_large`` state dict into a kerasseg LR-ASPP.

    Every key must feed a weight of `model` (``num_batches_tracked`` is ignored) and every
    weight must get a key of its shape; otherwise nothing is assigned.

    Args:
        state_dict: ``{key: numpy array}`` (see `kerasseg.convert.torchvision.load_state_dict`),
            e.g. from ``lraspp_mobilenet_v3_large-d234d4ea.pth``.
        model: a model of `kerasseg.models.lraspp.lraspp_torchvision` with the state dict's
            class count (the rows of ``classifier.low_classifier.weight``).

    Returns:
        `model`, with the weights assigned.

    Raises:
        TypeError: `state_dict` is not a dict, `model` not a Keras model.
        ValueError: `model` is not an LR-ASPP, `state_dict` is not an LR-ASPP MobileNetV3
            state dict, its class count differs from the model's, or keys are missing,
            unexpected or of the wrong shape (all named); the model is left unchanged.
    """
    _check_state_dict(state_dict)
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    try:
        classifier = model.get_layer("classifier_low_classifier")
    except ValueError:
        raise ValueError(
            f"`model` must be a kerasseg LR-ASPP (`lraspp_torchvision`, with a layer named "
            f"'classifier_low_classifier'); got {model.name!r}."
        ) from None
    classes = state_dict.get("classifier.low_classifier.weight")
    if classes is None or "backbone.0.0.weight" not in state_dict:
        found = sorted({key.split(".")[0] + "." for key in state_dict})
        raise ValueError(
            "`state_dict` holds no 'classifier.low_classifier.weight' and "
            "'backbone.0.0.weight': not a torchvision lraspp_mobilenet_v3_large state dict "
            f"(its keys start with {found[:10]})."
        )
    count = np.asarray(classes).shape[0]
    if count != classifier.filters:
        raise ValueError(
            f"`state_dict` is for {count} classes but the model has {classifier.filters}; "
            f"build it with num_classes={count}."
        )
    layer_map = _prefixed(BACKBONE_LAYER_MAP, "backbone.") + HEAD_LAYER_MAP
    _assign(state_dict, _leaf_layers(model), layer_map, ("",))
    return model
