"""Box and mask heads of torchvision's Mask R-CNN (v1, and the v2 variants), for NHWC RoIs.

* `BoxHead`: torchvision `TwoMLPHead` (v1): flatten the 7x7xC RoI features, ``fc6`` + ReLU,
  ``fc7`` + ReLU.
* `ConvBoxHead`: torchvision `FastRCNNConvFCHead` (v2): 4 x (3x3 conv + batch norm + ReLU),
  flatten, FC 1024 + ReLU.
* `BoxPredictor`: torchvision `FastRCNNPredictor`: ``cls_score`` (num_classes logits) and
  ``bbox_pred`` (4 * num_classes deltas, class-major ``class * 4 + k`` with k indexing
  torchvision's ``(dx, dy, dw, dh)``; see `kerasseg.models.maskrcnn.box_coding`).
* `MaskHead`: torchvision `MaskRCNNHeads`: 4 x (3x3 conv 256 + ReLU), optionally with batch
  norm (v2).
* `MaskPredictor`: torchvision `MaskRCNNPredictor`: 2x2 stride-2 transposed conv + ReLU, then a
  1x1 conv to one mask logit map per class.

RoI features are NHWC, so the flatten before the first fully connected layer runs in
``(h, w, c)`` order where torchvision's runs in ``(c, h, w)`` order (index ``c * h * w + ...``);
`heads_weights_from_state_dict` reorders that layer's weights: torch's (units, C*h*w) matrix
is reshaped to (units, C, h, w), transposed to (h, w, C, units) and flattened to
(h*w*C, units) (loading it unchanged gives errors of order 1). It also transposes the other
kernels: torch Linear (out, in) to Dense (in, out); torch Conv2d (out, in, kh, kw) to Keras
(kh, kw, in, out); torch ConvTranspose2d (in, out, kh, kw) to Keras Conv2DTranspose
(kh, kw, out, in) -- both a (2, 3, 1, 0) transpose with no spatial flip. It accepts the legacy
``mask_fcn{k}`` names of the mask head.

References: He et al., "Mask R-CNN", ICCV 2017 (arXiv:1703.06870); Lin et al., "Feature
Pyramid Networks", CVPR 2017 (arXiv:1612.03144); torchvision
``models/detection/{faster_rcnn,mask_rcnn}.py``.
"""

import keras
import numpy as np
from keras import layers, ops

from kerasseg.models.maskrcnn.backbone import CONV_INIT
from kerasseg.ops.checks import check_number, check_positive_int

__all__ = [
    "BoxHead",
    "BoxPredictor",
    "ConvBoxHead",
    "MaskHead",
    "MaskPredictor",
    "heads_weights_from_state_dict",
]

# torch's BatchNorm2d momentum 0.1 is Keras' 0.9; eps 1e-5.
_BN_MOMENTUM = 0.9


def _positive_ints(layer, name, values):
    try:
        items = tuple(values)
    except TypeError:
        raise TypeError(
            f"{layer}: `{name}` must be a sequence of positive integers; got {values!r}."
        ) from None
    if not items:
        raise ValueError(f"{layer}: `{name}` must not be empty; got {values!r}.")
    return tuple(check_positive_int(v, name, context=layer) for v in items)


def _epsilon(layer, value):
    return check_number(value, "epsilon", minimum=0, context=layer)


def _check_rank4(layer, input_shape, need_spatial=False):
    shape = tuple(input_shape)
    if len(shape) != 4 or shape[-1] is None or (need_spatial and None in shape[1:3]):
        what = "(N, height, width, channels) with known height, width and channels"
        if not need_spatial:
            what = "(N, height, width, channels) with known channels"
        raise ValueError(f"{layer}: the input must have shape {what}; got {shape}.")
    return shape


def _conv_stack(owner, channels, names, norm, dilation=1):
    """3x3 "same" convolutions and, with `norm`, a BatchNormalization after each.

    The convs have no bias when normalised; the norms are named `<conv>_bn` and use the
    owner's epsilon and dtype policy.
    """
    convs = [
        layers.Conv2D(
            c,
            3,
            padding="same",
            dilation_rate=dilation,
            use_bias=not norm,
            kernel_initializer=CONV_INIT,
            name=name,
            dtype=owner.dtype_policy,
        )
        for c, name in zip(channels, names, strict=True)
    ]
    norms = [
        layers.BatchNormalization(
            epsilon=owner.epsilon,
            momentum=_BN_MOMENTUM,
            name=f"{name}_bn",
            dtype=owner.dtype_policy,
        )
        for name in (names if norm else ())
    ]
    return convs, norms


def _build_conv_stack(convs, norms, height, width, channels):
    for i, conv in enumerate(convs):
        conv.build((None, height, width, channels))
        channels = conv.filters
        if norms:
            norms[i].build((None, height, width, channels))


def _run_conv_stack(convs, norms, x, training):
    """conv -> (BatchNorm) -> ReLU for each layer of `_conv_stack`."""
    for i, conv in enumerate(convs):
        x = conv(x, training=training)
        if norms:
            x = norms[i](x, training=training)
        x = ops.relu(x)
    return x


@keras.saving.register_keras_serializable(package="kerasseg")
class BoxHead(layers.Layer):
    """torchvision `TwoMLPHead`: flatten, ``fc6`` + ReLU, ``fc7`` + ReLU.

    Input: RoI features (N, h, w, C) (7x7x256 in Mask R-CNN), flattened in (h, w, c) order.
    Output: (N, representation_size).

    Args:
        representation_size: units of ``fc6`` and ``fc7`` (torchvision: 1024).
    """

    def __init__(self, representation_size=1024, **kwargs):
        super().__init__(**kwargs)
        self.representation_size = check_positive_int(
            representation_size, "representation_size", context="BoxHead"
        )
        self.fc6 = layers.Dense(
            self.representation_size, activation="relu", name="fc6", dtype=self.dtype_policy
        )
        self.fc7 = layers.Dense(
            self.representation_size, activation="relu", name="fc7", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        _, h, w, c = _check_rank4("BoxHead", input_shape, need_spatial=True)
        self.roi_shape = (int(h), int(w), int(c))
        self.fc6.build((None, h * w * c))
        self.fc7.build((None, self.representation_size))
        self.built = True

    def call(self, inputs, training=None):
        h, w, c = self.roi_shape
        x = ops.reshape(inputs, (-1, h * w * c))
        return self.fc7(self.fc6(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.representation_size)

    def get_config(self):
        config = super().get_config()
        config.update(representation_size=self.representation_size)
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class ConvBoxHead(layers.Layer):
    """torchvision `FastRCNNConvFCHead` (the v2 box head).

    ``len(conv_channels)`` x (3x3 conv, "same" padding, + batch norm + ReLU; with
    ``norm=False`` the conv has a bias and no norm), flatten in (h, w, c) order, then one
    Dense + ReLU per entry of `fc_units`. torchvision v2: conv_channels (256,)*4,
    fc_units (1024,), batch norm with eps 1e-5.

    Input: (N, h, w, C) RoI features. Output: (N, fc_units[-1]).

    Args:
        conv_channels: output channels of each conv (torchvision v2: (256,) * 4).
        fc_units: units of each fully connected layer (torchvision v2: (1024,)).
        norm: batch norm after each conv (and no conv bias).
        epsilon: batch-norm epsilon (torch's 1e-5).
    """

    def __init__(
        self,
        conv_channels=(256, 256, 256, 256),
        fc_units=(1024,),
        norm=True,
        epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.conv_channels = _positive_ints("ConvBoxHead", "conv_channels", conv_channels)
        self.fc_units = _positive_ints("ConvBoxHead", "fc_units", fc_units)
        if not isinstance(norm, bool):
            raise TypeError(f"ConvBoxHead: `norm` must be a bool; got {norm!r}.")
        self.norm = norm
        self.epsilon = _epsilon("ConvBoxHead", epsilon)
        names = [f"conv{i}" for i in range(len(self.conv_channels))]
        self.convs, self.norms = _conv_stack(self, self.conv_channels, names, norm)
        self.fcs = [
            layers.Dense(u, activation="relu", name=f"fc{j}", dtype=self.dtype_policy)
            for j, u in enumerate(self.fc_units)
        ]

    def build(self, input_shape):
        _, h, w, c = _check_rank4("ConvBoxHead", input_shape, need_spatial=True)
        self.roi_shape = (int(h), int(w), int(c))
        _build_conv_stack(self.convs, self.norms, h, w, c)
        units = h * w * self.conv_channels[-1]
        for fc, out in zip(self.fcs, self.fc_units, strict=True):
            fc.build((None, units))
            units = out
        self.built = True

    def call(self, inputs, training=None):
        x = _run_conv_stack(self.convs, self.norms, inputs, training)
        h, w, _ = self.roi_shape
        x = ops.reshape(x, (-1, h * w * self.conv_channels[-1]))
        for fc in self.fcs:
            x = fc(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.fc_units[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            conv_channels=list(self.conv_channels),
            fc_units=list(self.fc_units),
            norm=self.norm,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class BoxPredictor(layers.Layer):
    """torchvision `FastRCNNPredictor`: class logits and per-class box deltas.

    Input: (N, C) box-head features. Returns ``(class_logits, box_regression)``: (N, num_classes)
    logits (class 0 is background) and (N, 4 * num_classes) deltas, class-major
    (``class * 4 + k``) in torchvision's ``(dx, dy, dw, dh)`` order, ready for
    `box_coding.decode(..., weights=BOX_HEAD_WEIGHTS)`.

    Args:
        num_classes: number of classes including background (torchvision COCO: 91).
    """

    def __init__(self, num_classes=91, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes", context="BoxPredictor")
        self.cls_score = layers.Dense(self.num_classes, name="cls_score", dtype=self.dtype_policy)
        self.bbox_pred = layers.Dense(
            4 * self.num_classes, name="bbox_pred", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] is None:
            raise ValueError(
                f"BoxPredictor: the input must have shape (N, features) with known features; "
                f"got {shape}."
            )
        self.cls_score.build(shape)
        self.bbox_pred.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        return (
            self.cls_score(inputs, training=training),
            self.bbox_pred(inputs, training=training),
        )

    def compute_output_shape(self, input_shape):
        return ((input_shape[0], self.num_classes), (input_shape[0], 4 * self.num_classes))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class MaskHead(layers.Layer):
    """torchvision `MaskRCNNHeads`: 3x3 convs, each followed by ReLU.

    The convs use "same" padding (torch's padding=dilation); with ``norm=True`` (v2) each
    conv has no bias and is followed by batch norm, then ReLU.

    Input: (N, h, w, C) RoI features (14x14x256 in Mask R-CNN). Output: (N, h, w, channels[-1]).

    Args:
        channels: output channels of each conv (torchvision: (256,) * 4).
        dilation: dilation rate of every conv (torchvision: 1).
        norm: batch norm after each conv (v2).
        epsilon: batch-norm epsilon (torch's 1e-5).
    """

    def __init__(
        self, channels=(256, 256, 256, 256), dilation=1, norm=False, epsilon=1e-5, **kwargs
    ):
        super().__init__(**kwargs)
        self.channels = _positive_ints("MaskHead", "channels", channels)
        self.dilation = check_positive_int(dilation, "dilation", context="MaskHead")
        if not isinstance(norm, bool):
            raise TypeError(f"MaskHead: `norm` must be a bool; got {norm!r}.")
        self.norm = norm
        self.epsilon = _epsilon("MaskHead", epsilon)
        names = [f"mask_fcn{i + 1}" for i in range(len(self.channels))]
        self.convs, self.norms = _conv_stack(self, self.channels, names, norm, self.dilation)

    def build(self, input_shape):
        _, h, w, c = _check_rank4("MaskHead", input_shape)
        _build_conv_stack(self.convs, self.norms, h, w, c)
        self.built = True

    def call(self, inputs, training=None):
        return _run_conv_stack(self.convs, self.norms, inputs, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.channels[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=list(self.channels),
            dilation=self.dilation,
            norm=self.norm,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class MaskPredictor(layers.Layer):
    """torchvision `MaskRCNNPredictor`: upsampling, then one mask logit map per class.

    ``conv5_mask`` (2x2 stride-2 transposed conv) + ReLU, then ``mask_fcn_logits`` (1x1
    conv) to one logit map per class.

    Input: (N, h, w, C) mask-head features. Output: (N, 2h, 2w, num_classes) mask logits
    (channel = class id; apply a sigmoid and pick the predicted class's channel).

    Args:
        num_classes: number of classes including background (torchvision COCO: 91).
        dim_reduced: channels of the transposed conv (torchvision: 256).
    """

    def __init__(self, num_classes=91, dim_reduced=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes", context="MaskPredictor")
        self.dim_reduced = check_positive_int(dim_reduced, "dim_reduced", context="MaskPredictor")
        self.conv5_mask = layers.Conv2DTranspose(
            self.dim_reduced,
            2,
            strides=2,
            padding="valid",
            activation="relu",
            kernel_initializer=CONV_INIT,
            name="conv5_mask",
            dtype=self.dtype_policy,
        )
        self.mask_fcn_logits = layers.Conv2D(
            self.num_classes,
            1,
            kernel_initializer=CONV_INIT,
            name="mask_fcn_logits",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        _, h, w, c = _check_rank4("MaskPredictor", input_shape)
        self.conv5_mask.build((None, h, w, c))
        up = (None, None if h is None else 2 * h, None if w is None else 2 * w, self.dim_reduced)
        self.mask_fcn_logits.build(up)
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv5_mask(inputs, training=training)
        return self.mask_fcn_logits(x, training=training)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else 2 * h, None if w is None else 2 * w, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dim_reduced=self.dim_reduced)
        return config


# ---------------------------------------------------------------------------------------------
# torchvision state dict -> these layers (`kerasseg.convert.torchvision.maskrcnn_weights`
# calls `heads_weights_from_state_dict` for the RoI heads)


class _StateDict:
    """Look-ups in a torchvision state dict that remember which keys were used."""

    def __init__(self, state_dict):
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(
                f"`state_dict` must be a mapping of names to arrays; got "
                f"{type(state_dict).__name__}."
            )
        self.state_dict = state_dict
        self.used = []

    def has(self, key):
        return key in self.state_dict

    def get(self, key, *legacy):
        for name in (key, *legacy):
            if name in self.state_dict:
                self.used.append(name)
                value = self.state_dict[name]
                if hasattr(value, "detach"):  # a torch tensor
                    value = value.detach().cpu().numpy()
                return np.asarray(value)
        also = f" (nor the legacy {', '.join(map(repr, legacy))})" if legacy else ""
        raise ValueError(f"`state_dict` has no key {key!r}{also}.")


def _assign(variable, value, key):
    expected = tuple(variable.shape)
    if tuple(value.shape) != expected:
        raise ValueError(
            f"`state_dict`[{key!r}] has shape {tuple(value.shape)} after conversion; the layer "
            f"weight {variable.path!r} needs {expected}."
        )
    variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def _linear(sd, dense, key, flatten_chw=None):
    """Linear (out, in) -> Dense (in, out); `flatten_chw` = (c, h, w) reorders NCHW flattening."""
    weight = sd.get(f"{key}.weight")
    if flatten_chw is not None:
        c, h, w = flatten_chw
        if weight.ndim != 2 or weight.shape[1] != c * h * w:
            raise ValueError(
                f"`state_dict`[{key + '.weight'!r}] has shape {weight.shape}; expected "
                f"(units, {c * h * w}) for {c}x{h}x{w} features."
            )
        weight = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
    else:
        weight = weight.T
    _assign(dense.kernel, weight, f"{key}.weight")
    _assign(dense.bias, sd.get(f"{key}.bias"), f"{key}.bias")


def _conv(sd, conv, key, legacy=None):
    """A torch conv's weights into a Keras conv: a (2, 3, 1, 0) transpose, no spatial flip.

    Conv2d (out, in, kh, kw) -> (kh, kw, in, out); ConvTranspose2d (in, out, kh, kw) ->
    Keras Conv2DTranspose (kh, kw, out, in).
    """
    names = (legacy + ".weight",) if legacy else ()
    weight = sd.get(f"{key}.weight", *names)
    if weight.ndim != 4:
        raise ValueError(f"`state_dict`[{key + '.weight'!r}] must be 4-D; got {weight.shape}.")
    _assign(conv.kernel, weight.transpose(2, 3, 1, 0), f"{key}.weight")
    if conv.use_bias:
        names = (legacy + ".bias",) if legacy else ()
        _assign(conv.bias, sd.get(f"{key}.bias", *names), f"{key}.bias")


def _batch_norm(sd, bn, key):
    for name, variable in (
        ("weight", bn.gamma),
        ("bias", bn.beta),
        ("running_mean", bn.moving_mean),
        ("running_var", bn.moving_variance),
    ):
        _assign(variable, sd.get(f"{key}.{name}"), f"{key}.{name}")
    if sd.has(f"{key}.num_batches_tracked"):
        sd.get(f"{key}.num_batches_tracked")


def _load_box_head(sd, head, key):
    """`BoxHead` from ``fc6`` and ``fc7``; `ConvBoxHead` from its convs, norms and FCs."""
    if isinstance(head, BoxHead):
        if not head.built:
            features = sd.get(f"{key}.fc6.weight").shape[1]
            sd.used.pop()
            head.build((None, 7, 7, features // 49))
        h, w, c = head.roi_shape
        _linear(sd, head.fc6, f"{key}.fc6", flatten_chw=(c, h, w))
        _linear(sd, head.fc7, f"{key}.fc7")
        return
    if not head.built:
        channels = sd.get(f"{key}.0.0.weight").shape[1]
        sd.used.pop()
        head.build((None, 7, 7, channels))
    for i, conv in enumerate(head.convs):
        _conv(sd, conv, f"{key}.{i}.0")
        if head.norm:
            _batch_norm(sd, head.norms[i], f"{key}.{i}.1")
    h, w, _ = head.roi_shape
    first = len(head.convs) + 1
    for j, fc in enumerate(head.fcs):
        chw = (head.conv_channels[-1], h, w) if j == 0 else None
        _linear(sd, fc, f"{key}.{first + 2 * j}", flatten_chw=chw)


def _load_box_predictor(sd, predictor, key):
    if not predictor.built:
        features = sd.get(f"{key}.cls_score.weight").shape[1]
        sd.used.pop()
        predictor.build((None, features))
    _linear(sd, predictor.cls_score, f"{key}.cls_score")
    _linear(sd, predictor.bbox_pred, f"{key}.bbox_pred")


def _load_mask_head(sd, head, key):
    if not head.built:
        channels = sd.get(f"{key}.0.0.weight", f"{key}.mask_fcn1.weight").shape[1]
        sd.used.pop()
        head.build((None, 14, 14, channels))
    for i, conv in enumerate(head.convs):
        _conv(sd, conv, f"{key}.{i}.0", legacy=f"{key}.mask_fcn{i + 1}")
        if head.norm:
            _batch_norm(sd, head.norms[i], f"{key}.{i}.1")


def _load_mask_predictor(sd, predictor, key):
    if not predictor.built:
        channels = sd.get(f"{key}.conv5_mask.weight").shape[0]
        sd.used.pop()
        predictor.build((None, 14, 14, channels))
    _conv(sd, predictor.conv5_mask, f"{key}.conv5_mask")
    _conv(sd, predictor.mask_fcn_logits, f"{key}.mask_fcn_logits")


# Entry of `heads_weights_from_state_dict`'s `layers` -> (accepted classes, loader), in
# loading order.
_HEAD_LOADERS = {
    "box_head": ((BoxHead, ConvBoxHead), _load_box_head),
    "box_predictor": ((BoxPredictor,), _load_box_predictor),
    "mask_head": ((MaskHead,), _load_mask_head),
    "mask_predictor": ((MaskPredictor,), _load_mask_predictor),
}


def _check_head_layers(layers):
    if not isinstance(layers, dict):
        raise TypeError(f"`layers` must be a dict of name -> layer; got {type(layers).__name__}.")
    for name, layer in layers.items():
        if name not in _HEAD_LOADERS:
            raise ValueError(
                f"`layers` has unknown entry {name!r}; accepted: {sorted(_HEAD_LOADERS)}."
            )
        accepted = _HEAD_LOADERS[name][0]
        if not isinstance(layer, accepted):
            names = " or ".join(t.__name__ for t in accepted)
            raise TypeError(f"`layers`[{name!r}] must be a {names}; got {type(layer).__name__}.")


def heads_weights_from_state_dict(state_dict, layers, prefix="roi_heads."):
    """Copy torchvision RoI-head weights into the layers of this module.

    Key mapping (P = prefix):

    * `BoxHead`: ``P box_head.fc6.{weight,bias}`` (weight (R, C*h*w) -> reshape (R, C, h, w) ->
      transpose (h, w, C, R) -> reshape (h*w*C, R)), ``P box_head.fc7.*`` (transposed).
    * `ConvBoxHead`: ``P box_head.{i}.0.weight`` (+ ``.0.bias`` without norm) and
      ``P box_head.{i}.1.{weight,bias,running_mean,running_var[,num_batches_tracked]}`` for
      conv i; then ``P box_head.{n+1+2j}.{weight,bias}`` for FC j (n convs; the first FC is
      reordered like fc6).
    * `BoxPredictor`: ``P box_predictor.{cls_score,bbox_pred}.{weight,bias}`` (transposed).
    * `MaskHead`: ``P mask_head.{k}.0.{weight,bias}`` or legacy ``P mask_head.mask_fcn{k+1}.*``;
      with norm ``P mask_head.{k}.1.*``.
    * `MaskPredictor`: ``P mask_predictor.conv5_mask.{weight,bias}`` (ConvTranspose2d
      (in, out, kh, kw) -> (kh, kw, out, in)) and ``P mask_predictor.mask_fcn_logits.*``.

    Args:
        state_dict: mapping str -> array, a torchvision Mask R-CNN state dict (numpy arrays
            or torch tensors); current or legacy (``mask_head.mask_fcn{k}``) key names.
        layers: dict with any of ``"box_head"`` (`BoxHead` or `ConvBoxHead`),
            ``"box_predictor"`` (`BoxPredictor`), ``"mask_head"`` (`MaskHead`),
            ``"mask_predictor"`` (`MaskPredictor`). Unbuilt layers are built for
            torchvision's RoI sizes (7x7 box, 14x14 mask features) with the channel counts
            read from the state dict.
        prefix: prefix of the RoI-head keys (torchvision: ``"roi_heads."``).

    Returns:
        The list of state-dict keys consumed, in loading order (legacy names where those
        were used).

    Raises:
        TypeError: `layers` is not a dict of the layers above, `state_dict` not a mapping or
            `prefix` not a str.
        ValueError: `layers` has an unknown entry, or a key is missing or has the wrong
            shape.
    """
    _check_head_layers(layers)
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a str; got {prefix!r}.")
    sd = _StateDict(state_dict)
    for name, (_, load) in _HEAD_LOADERS.items():
        if layers.get(name) is not None:
            load(sd, layers[name], f"{prefix}{name}")
    return list(sd.used)
