"""torchvision detection weights -> kerasseg Keras models (numpy only).

A torchvision state dict is handled as a plain ``{key: numpy array}`` dict, so conversion
needs no torch: `load_state_dict` reads ``.npz`` and ``.safetensors`` with numpy, and
``.pth``/``.pt`` files (``torch.save``'s zip and legacy formats) with
`kerasseg.convert.torch_pickle`, which refuses pickled code.

Structure, so heads can be added next to the backbone:

* `LEGACY_ALIASES`: old key spellings that torchvision's ``_load_from_state_dict`` still
  remaps when a checkpoint's metadata ``version`` is missing or below 2 (FPN
  ``inner_blocks.{i}.weight`` for ``inner_blocks.{i}.0.weight``, likewise ``layer_blocks``;
  ``rpn.head.conv.weight`` for ``rpn.head.conv.0.0.weight``; ``roi_heads.mask_head.mask_fcn{k}``
  for ``roi_heads.mask_head.{k-1}.0``), rewritten to the current names by `canonical_keys`.
* A layer map: ``(regex on the Keras layer name, torch module path template)`` pairs, e.g.
  ``layer1_0_bn1 -> body.layer1.0.bn1`` (`BACKBONE_LAYER_MAP`).
* `LAYER_PARAMS`: per Keras layer class, which torch parameter feeds which Keras variable
  and how its layout changes: conv ``(out, in, kh, kw) -> (kh, kw, in, out)``; Linear
  ``(out, in) -> (in, out)``; depthwise Conv2d ``(C, 1, kh, kw) -> (kh, kw, C, 1)``;
  ConvTranspose2d ``(in, out, kh, kw) -> (kh, kw, out, in)``
  (Keras' Conv2DTranspose layout). Both conv kinds are a (2, 3, 1, 0) transpose with no
  spatial flip.
* `assign_weights`: the generic engine. It checks every key and shape first and assigns
  nothing unless all of the model's weights found their key; it returns the keys consumed.

Parameter counts: torchvision's ``sum(p.numel() for p in model.parameters())`` (44,401,393 for
`maskrcnn_resnet50_fpn`) excludes buffers, and `FrozenBatchNorm2d` keeps all four of its
tensors (weight, bias, running mean and variance) as buffers; `torchvision_param_count`
counts a Keras model the same way.
"""

import os
import re

import keras
import numpy as np

from kerasseg import registry
from kerasseg.convert.torch_pickle import read_torch_checkpoint
from kerasseg.models.maskrcnn.heads import heads_weights_from_state_dict
from kerasseg.models.torchvision_resnet import FrozenBatchNorm

__all__ = [
    "BACKBONE_LAYER_MAP",
    "LAYER_PARAMS",
    "LEGACY_ALIASES",
    "MASKRCNN_PREFIXES",
    "OPTIONAL_PARAMS",
    "assign_weights",
    "backbone_keys",
    "backbone_weights",
    "canonical_keys",
    "convert_file",
    "load_state_dict",
    "maskrcnn_weights",
    "torchvision_param_count",
    "weight_map",
]

# Old torchvision key spellings -> current ones (`FeaturePyramidNetwork`, `RPNHead` and
# `MaskRCNNHeads` `_load_from_state_dict`, used when the state-dict "version" is < 2).
LEGACY_ALIASES = (
    (re.compile(r"(^|\.)fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$"),
     lambda m: f"{m[1]}fpn.{m[2]}_blocks.{m[3]}.0.{m[4]}"),
    (re.compile(r"(^|\.)rpn\.head\.conv\.(weight|bias)$"),
     lambda m: f"{m[1]}rpn.head.conv.0.0.{m[2]}"),
    (re.compile(r"(^|\.)roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"{m[1]}roi_heads.mask_head.{int(m[2]) - 1}.0.{m[3]}"),
)  # fmt: skip

# Keras layer name (full match) -> torch module path, relative to the state-dict prefix.
BACKBONE_LAYER_MAP = (
    (r"(conv1|bn1)", r"body.\1"),
    (r"layer(\d+)_(\d+)_(conv|bn)(\d+)", r"body.layer\1.\2.\3\4"),
    (r"layer(\d+)_(\d+)_downsample_([01])", r"body.layer\1.\2.downsample.\3"),
    (r"fpn_(inner|layer)_(\d+)", r"fpn.\1_blocks.\2.0"),
    (r"fpn_(inner|layer)_(\d+)_norm", r"fpn.\1_blocks.\2.1"),
)


def _conv_kernel(w):
    return np.transpose(w, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def _linear_kernel(w):
    return np.transpose(w, (1, 0))  # (out, in) -> (in, out)


def _depthwise_kernel(w):
    # (C, 1, kh, kw) -> (kh, kw, C, 1); an array of another rank is left for the shape check.
    return np.transpose(w, (2, 3, 0, 1)) if np.ndim(w) == 4 else w


def _same(w):
    return w


_NORM_PARAMS = (
    ("gamma", "weight", _same),
    ("beta", "bias", _same),
    ("moving_mean", "running_mean", _same),
    ("moving_variance", "running_var", _same),
)
# Keras layer class name -> ((Keras attribute, torch parameter name, numpy transform), ...).
LAYER_PARAMS = {
    "Conv2D": (("kernel", "weight", _conv_kernel), ("bias", "bias", _same)),
    # Conv2DTranspose kernel is (kh, kw, out, in); torch ConvTranspose2d is (in, out, kh, kw).
    "Conv2DTranspose": (("kernel", "weight", _conv_kernel), ("bias", "bias", _same)),
    "Dense": (("kernel", "weight", _linear_kernel), ("bias", "bias", _same)),
    # DepthwiseConv2D kernel is (kh, kw, C, 1); torch's depthwise Conv2d is (C, 1, kh, kw).
    "DepthwiseConv2D": (("kernel", "weight", _depthwise_kernel), ("bias", "bias", _same)),
    "FrozenBatchNorm": _NORM_PARAMS,
    "BatchNormalization": _NORM_PARAMS,
    "LayerNormalization": (("gamma", "weight", _same), ("beta", "bias", _same)),
}
# Torch keys consumed when present but never needed (torch BatchNorm2d's step counter;
# FrozenBatchNorm2d drops it on load too).
OPTIONAL_PARAMS = {"FrozenBatchNorm": ("num_batches_tracked",),
                   "BatchNormalization": ("num_batches_tracked",)}  # fmt: skip


def canonical_keys(keys):
    """Map each current-style key to the key it was given as (legacy names rewritten).

    Args:
        keys: the keys of a state dict.

    Returns:
        A dict ``{current spelling: key as given}``.

    Raises:
        ValueError: a legacy key and its current spelling are both present.
    """
    out = {}
    for key in keys:
        canonical = key
        for pattern, rewrite in LEGACY_ALIASES:
            match = pattern.search(key)
            if match:
                canonical = key[: match.start()] + rewrite(match)
                break
        if canonical in out:
            raise ValueError(
                f"`state_dict` holds both {out[canonical]!r} and {key!r}, two spellings of "
                f"{canonical!r}; keep one."
            )
        out[canonical] = key
    return out


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def weight_map(layers, layer_map, prefix):
    """The torch key of every Keras weight of `layers`.

    Args:
        layers: iterable of Keras layers.
        layer_map: ``((keras name regex, torch module template), ...)``, full matches.
        prefix: prepended to the torch module path.

    Returns:
        ``(entries, optional, unmapped)``: ``[(layer, attribute, key, transform), ...]``;
        the torch keys that may be present and are then consumed (``num_batches_tracked``);
        and the Keras layers holding weights that match no pattern of `layer_map`.
    """
    compiled = [(re.compile(p), t) for p, t in layer_map]
    entries, optional, unmapped = [], [], []
    for layer in layers:
        if not layer.weights:
            continue
        kind = type(layer).__name__
        module = None
        for pattern, template in compiled:
            match = pattern.fullmatch(layer.name)
            if match:
                module = prefix + match.expand(template)
                break
        if module is None or kind not in LAYER_PARAMS:
            unmapped.append(f"{layer.name} ({kind})")
            continue
        for attr, param, transform in LAYER_PARAMS[kind]:
            if getattr(layer, attr, None) is not None:  # None: e.g. a conv without bias
                entries.append((layer, attr, f"{module}.{param}", transform))
        optional.extend(f"{module}.{param}" for param in OPTIONAL_PARAMS.get(kind, ()))
    return entries, optional, unmapped


def assign_weights(state_dict, layers, layer_map, prefix, owned_prefixes=()):
    """Assign torch-keyed numpy arrays to Keras layers through `layer_map`; all or nothing.

    Args:
        state_dict: dict ``{torchvision key: numpy array}`` (legacy names accepted).
        layers: iterable of Keras layers; every one that holds weights must match a pattern.
        layer_map: ``((keras name regex, torch module template), ...)``, full matches.
        prefix: prepended to the torch module path (e.g. "backbone.").
        owned_prefixes: key prefixes that these layers own entirely: a key under one of
            them that feeds no weight is reported as unexpected.

    Returns:
        The set of `state_dict` keys (as given) that were consumed.

    Raises:
        TypeError: `state_dict` is not a dict.
        ValueError: listing Keras weights with no key, keys with the wrong shape, unexpected
            keys under `owned_prefixes`, and Keras layers that hold weights but match no
            pattern. Nothing is assigned then.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"`state_dict` must be a dict of arrays, got {type(state_dict).__name__}")
    keys = canonical_keys(state_dict)
    entries, optional, unmapped = weight_map(layers, layer_map, prefix)
    plan, consumed, missing, bad_shape = [], set(), [], []
    for layer, attr, key, transform in entries:
        variable = getattr(layer, attr)
        if key not in keys:
            missing.append(f"{layer.name}.{attr} <- {key}")
            continue
        given = np.asarray(state_dict[keys[key]])
        value = transform(given)
        if tuple(value.shape) != tuple(variable.shape):
            bad_shape.append(
                f"{keys[key]}: {tuple(given.shape)}, converted {tuple(value.shape)}, but "
                f"{layer.name}.{attr} is {tuple(variable.shape)}"
            )
            continue
        plan.append((variable, value))
        consumed.add(keys[key])
    consumed.update(keys[key] for key in optional if key in keys)
    known = {key for _, _, key, _ in entries}.union(optional)
    unexpected = sorted(
        given
        for key, given in keys.items()
        if key not in known and any(key.startswith(p) for p in owned_prefixes)
    )
    problems = []
    if unmapped:
        problems.append("Keras layers with weights but no torchvision name: " + ", ".join(unmapped))
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
    if bad_shape:
        problems.append("shape mismatches: " + "; ".join(bad_shape))
    if unexpected:
        owned = ", ".join(repr(p) for p in owned_prefixes if p)
        where = f" under {owned}" if owned else ""
        problems.append(
            f"unexpected keys{where} ({len(unexpected)}): " + ", ".join(unexpected[:20])
        )
    if problems:
        raise ValueError("`state_dict` does not fit the model: " + " | ".join(problems))
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    return consumed


def _find_backbone(model):
    """The Keras model whose layers are the backbone's: `model` itself or one nested model."""
    names = {layer.name for layer in model.layers}
    if {"conv1", "fpn_inner_0"} <= names:
        return model
    found = [
        layer for layer in model.layers if isinstance(layer, keras.Model) and _has_backbone(layer)
    ]
    if len(found) != 1:
        raise ValueError(
            f"`model`: expected a `resnet_fpn_backbone` model or a model holding exactly one, "
            f"found {len(found)} in {model.name!r}"
        )
    return _find_backbone(found[0])


def _has_backbone(model):
    names = {layer.name for layer in model.layers}
    return {"conv1", "fpn_inner_0"} <= names or any(
        isinstance(layer, keras.Model) and _has_backbone(layer) for layer in model.layers
    )


def backbone_weights(state_dict, model, prefix="backbone."):
    """Load torchvision ResNet-FPN weights into a `resnet_fpn_backbone` model.

    Args:
        state_dict: ``{key: numpy array}`` with torchvision keys such as
            ``backbone.body.conv1.weight``, ``backbone.body.layer1.0.bn1.running_var``,
            ``backbone.fpn.inner_blocks.0.0.weight``; the legacy ``fpn.inner_blocks.{i}.weight``
            / ``layer_blocks`` spellings are accepted. Keys outside `prefix` are ignored.
        model: the backbone model, or a model that contains exactly one as a nested model.
        prefix: prefix of the backbone keys: "backbone." for a full detection model, "" for
            a `BackboneWithFPN` state dict.

    Returns:
        The set of consumed `state_dict` keys (as given), for a full-model converter to
        check for keys nobody consumed.

    Raises:
        ValueError: naming every backbone weight of `model` without a key, every shape
            mismatch, and every key under `prefix` that matched nothing; nothing is assigned
            then.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a str, got {type(prefix).__name__}")
    backbone = _find_backbone(model)
    return assign_weights(
        state_dict, _leaf_layers(backbone), BACKBONE_LAYER_MAP, prefix, owned_prefixes=(prefix,)
    )


def backbone_keys(model, prefix="backbone."):
    """The torchvision keys `backbone_weights` needs for `model` (current spelling), as a set.

    Excludes the optional ``num_batches_tracked`` of BatchNorm layers.

    Args:
        model: the backbone model, or a model that contains exactly one as a nested model.
        prefix: prefix of the backbone keys.

    Returns:
        A set of keys.

    Raises:
        ValueError: a backbone layer with weights has no torchvision name.
    """
    backbone = _find_backbone(model)
    entries, _, unmapped = weight_map(_leaf_layers(backbone), BACKBONE_LAYER_MAP, prefix)
    if unmapped:
        raise ValueError(
            "Keras layers with weights but no torchvision name: " + ", ".join(unmapped)
        )
    return {key for _, _, key, _ in entries}


MASKRCNN_PREFIXES = ("backbone.", "rpn.head.", "roi_heads.")


def maskrcnn_weights(state_dict, model):
    """Load a torchvision Mask R-CNN state dict into a `kerasseg` Mask R-CNN model.

    Works for `maskrcnn_resnet50_fpn` (v1; the COCO weights need the model's frozen-BN
    epsilon 0, its default) and `maskrcnn_resnet50_fpn_v2`, and for other ResNet depths.
    Legacy key spellings are accepted. A key outside ``backbone.`` / ``rpn.head.`` /
    ``roi_heads.``, a missing key or a shape mismatch raises a ValueError naming them, and
    the model keeps the weights it had.

    Args:
        state_dict: ``{key: numpy array}`` (see `load_state_dict`).
        model: a model from `kerasseg.models.maskrcnn.model.maskrcnn` with the same number of
            classes (`roi_heads.box_predictor.cls_score.weight` has one row per class).

    Returns:
        `model`, with the weights assigned.

    Raises:
        TypeError: `state_dict` is not a mapping.
        ValueError: `state_dict` does not fit `model` (see above); the model's weights are
            left unchanged.
    """
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"`state_dict` must be a mapping; got {type(state_dict).__name__}.")
    keys = canonical_keys(state_dict)
    canonical = {key: np.asarray(state_dict[given]) for key, given in keys.items()}
    foreign = sorted(given for key, given in keys.items() if not key.startswith(MASKRCNN_PREFIXES))
    if foreign:
        raise ValueError(
            f"`state_dict` has keys outside {MASKRCNN_PREFIXES} ({len(foreign)}): "
            + ", ".join(foreign[:20])
        )
    try:
        detector = model.get_layer("detector")
    except ValueError:
        raise ValueError(
            f"`model` must be a kerasseg Mask R-CNN (with a layer named 'detector'); got "
            f"{model.name!r}."
        ) from None
    classes = canonical.get("roi_heads.box_predictor.cls_score.weight")
    if classes is not None and classes.shape[0] != detector.num_classes:
        raise ValueError(
            f"`state_dict` is for {classes.shape[0]} classes but the model has "
            f"{detector.num_classes}; build it with num_classes={classes.shape[0]}."
        )
    saved = [w.numpy() for w in model.weights]
    try:
        _assign_maskrcnn(canonical, keys, model, detector)
    except Exception:
        for variable, value in zip(model.weights, saved, strict=True):
            variable.assign(value)  # a refused state dict leaves the model as it was
        raise
    return model


def _assign_maskrcnn(canonical, keys, model, detector):
    # Imported here: the RPN module imports TensorFlow, which the backbone converters above
    # do not need.
    from kerasseg.models.maskrcnn.rpn import rpn_head_weights_from_state_dict

    consumed = set(backbone_weights(canonical, model))
    try:
        rpn_head_weights_from_state_dict(canonical, detector.rpn_head)
    except KeyError as error:
        raise ValueError(f"`state_dict`: {error.args[0]}") from None
    consumed |= {
        f"rpn.head.conv.{i}.0.{p}"
        for i in range(detector.rpn_head.conv_depth)
        for p in ("weight", "bias")
    } | {f"rpn.head.{n}.{p}" for n in ("cls_logits", "bbox_pred") for p in ("weight", "bias")}
    heads = {
        name: getattr(detector, name)
        for name in ("box_head", "box_predictor", "mask_head", "mask_predictor")
    }
    consumed |= set(heads_weights_from_state_dict(canonical, heads, prefix="roi_heads."))
    unused = sorted(keys[key] for key in set(canonical) - consumed)
    if unused:
        raise ValueError(
            f"`state_dict` keys that match no weight of the model ({len(unused)}): "
            + ", ".join(unused[:20])
        )


def torchvision_param_count(model):
    """Parameters as torchvision's ``sum(p.numel() for p in model.parameters())`` counts them.

    Excludes what torch keeps as buffers: all four `FrozenBatchNorm` variables and the moving
    mean/variance of `BatchNormalization` (its gamma and beta are torch parameters), in every
    nested model and layer.

    Args:
        model: a Keras model.

    Returns:
        The parameter count, an int.
    """
    buffers = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, FrozenBatchNorm):
            buffers.update(id(w) for w in layer.weights)
        elif isinstance(layer, keras.layers.BatchNormalization):
            buffers.update(id(w) for w in (layer.moving_mean, layer.moving_variance))
    return sum(int(np.prod(w.shape)) for w in model.weights if id(w) not in buffers)


def load_state_dict(path):
    """Read a state dict as ``{key: numpy array}`` from ``.npz``, ``.safetensors`` or ``.pth``.

    ``.safetensors`` needs the `safetensors` package (its numpy API, no torch); ``.pth`` /
    ``.pt`` / ``.bin`` (``torch.save``'s zip format, torch >= 1.6) are read without torch by
    `kerasseg.convert.torch_pickle.read_torch_checkpoint`, which refuses any pickled code;
    bfloat16 tensors become float32, exactly; torch's legacy (before 1.6) format too.

    Args:
        path: the file.

    Returns:
        A dict ``{key: numpy array}``.

    Raises:
        ImportError: the package the format needs is not installed.
        ValueError: the extension is not supported, or the file holds no state dict (for a
            torch file: also a legacy or corrupt file, or one naming a non-tensor global).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    if ext == ".safetensors":
        try:  # an optional package, imported only for this format
            from safetensors.numpy import load_file
        except ImportError as error:
            raise ImportError(
                f"reading {path} needs the `safetensors` package: pip install safetensors"
            ) from error
        return dict(load_file(path))
    if ext in (".pth", ".pt", ".bin"):
        return read_torch_checkpoint(path)
    raise ValueError(
        f"`path`: unsupported extension {ext!r} of {path}; accepted: .npz, .safetensors, "
        ".pth, .pt, .bin"
    )


def convert_file(source, destination, model="maskrcnn_resnet50_fpn"):
    """Convert a torchvision Mask R-CNN checkpoint to a Keras ``.weights.h5`` file.

    Args:
        source: ``.pth`` (no torch needed), ``.safetensors`` or ``.npz`` state dict, e.g.
            torchvision's ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``.
        destination: the ``.weights.h5`` file to write; load it with
            ``kerasseg.load(model, num_classes=..., weights=destination)``.
        model: the registry name of the architecture the weights belong to.

    Returns:
        (destination path, number of classes).

    Raises:
        ValueError: `destination` does not end with ``.weights.h5``, `model` is not a Mask
            R-CNN, or `source` holds no torchvision Mask R-CNN state dict.
    """
    destination = os.fspath(destination)
    if not destination.endswith(".weights.h5"):
        raise ValueError(f"`destination` must end with .weights.h5; got {destination!r}.")
    if registry.get_entry(model).task != "instance":
        raise ValueError(f"`model` must be a Mask R-CNN architecture; got {model!r}.")
    state_dict = load_state_dict(source)
    classes = state_dict.get("roi_heads.box_predictor.cls_score.weight")
    if classes is None:
        raise ValueError(
            f"`source` {source!r} holds no roi_heads.box_predictor.cls_score.weight: not a "
            "torchvision Mask R-CNN state dict."
        )
    num_classes = int(np.asarray(classes).shape[0])
    keras_model = registry.load(model, num_classes=num_classes, weights=None)
    maskrcnn_weights(state_dict, keras_model)
    directory = os.path.dirname(destination)
    if directory:
        os.makedirs(directory, exist_ok=True)
    keras_model.save_weights(destination)
    return destination, num_classes
