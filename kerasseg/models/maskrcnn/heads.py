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
``(h, w, c)`` order where torchvision's runs in ``(c, h, w)`` order;
`heads_weights_from_state_dict` reorders that layer's weights (reference trap 6). It also
transposes linear (trap 9), conv (trap 7) and transposed-conv (trap 8) kernels and accepts the
legacy ``mask_fcn{k}`` names of the mask head.

References: He et al., "Mask R-CNN", ICCV 2017 (arXiv:1703.06870); Lin et al., "Feature
Pyramid Networks", CVPR 2017 (arXiv:1612.03144); torchvision
``models/detection/{faster_rcnn,mask_rcnn}.py``.
"""

import numbers

import keras
import numpy as np
from keras import layers, ops

# torchvision initialises head convs with kaiming_normal_(mode="fan_out", relu).
_CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
# torch's BatchNorm2d momentum 0.1 is Keras' 0.9; eps 1e-5.
_BN_MOMENTUM = 0.9


def _positive_int(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{layer}: `{name}` must be a positive integer; got {value!r}.")
    return int(value)


def _positive_ints(layer, name, values):
    try:
        items = tuple(values)
    except TypeError:
        raise TypeError(
            f"{layer}: `{name}` must be a sequence of positive integers; got {values!r}."
        ) from None
    if not items:
        raise ValueError(f"{layer}: `{name}` must not be empty; got {values!r}.")
    return tuple(_positive_int(layer, name, v) for v in items)


def _epsilon(layer, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{layer}: `epsilon` must be a number >= 0; got {value!r}.")
    return float(value)


def _check_rank4(layer, input_shape, need_spatial=False):
    shape = tuple(input_shape)
    if len(shape) != 4 or shape[-1] is None or (need_spatial and None in shape[1:3]):
        what = "(N, height, width, channels) with known height, width and channels"
        if not need_spatial:
            what = "(N, height, width, channels) with known channels"
        raise ValueError(f"{layer}: the input must have shape {what}; got {shape}.")
    return shape


def _conv_stack(owner, channels, names, norm, dilation=1):
    """3x3 "same" convolutions (no bias when normalised) and, with `norm`, a BatchNormalization
    after each (named `<conv>_bn`), with the owner's epsilon and dtype policy."""
    convs = [
        layers.Conv2D(
            c,
            3,
            padding="same",
            dilation_rate=dilation,
            use_bias=not norm,
            kernel_initializer=_CONV_INIT,
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
        self.representation_size = _positive_int(
            "BoxHead", "representation_size", representation_size
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
        self.num_classes = _positive_int("BoxPredictor", "num_classes", num_classes)
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
    """torchvision `MaskRCNNHeads`: 3x3 convs ("same" padding, i.e. torch's padding=dilation)
    each followed by ReLU, or by batch norm + ReLU (conv without bias) with ``norm=True`` (v2).

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
        self.dilation = _positive_int("MaskHead", "dilation", dilation)
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
    """torchvision `MaskRCNNPredictor`: ``conv5_mask`` (2x2 stride-2 transposed conv) + ReLU,
    then ``mask_fcn_logits`` (1x1 conv) to one logit map per class.

    Input: (N, h, w, C) mask-head features. Output: (N, 2h, 2w, num_classes) mask logits
    (channel = class id; apply a sigmoid and pick the predicted class's channel).

    Args:
        num_classes: number of classes including background (torchvision COCO: 91).
        dim_reduced: channels of the transposed conv (torchvision: 256).
    """

    def __init__(self, num_classes=91, dim_reduced=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _positive_int("MaskPredictor", "num_classes", num_classes)
        self.dim_reduced = _positive_int("MaskPredictor", "dim_reduced", dim_reduced)
        self.conv5_mask = layers.Conv2DTranspose(
            self.dim_reduced,
            2,
            strides=2,
            padding="valid",
            activation="relu",
            kernel_initializer=_CONV_INIT,
            name="conv5_mask",
            dtype=self.dtype_policy,
        )
        self.mask_fcn_logits = layers.Conv2D(
            self.num_classes,
            1,
            kernel_initializer=_CONV_INIT,
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
# torchvision state dict -> these layers (to be merged into kerasseg.convert.torchvision)


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
    """Conv2d (out, in, kh, kw) -> (kh, kw, in, out); ConvTranspose2d (in, out, kh, kw) ->
    Keras Conv2DTranspose (kh, kw, out, in). Both are a (2, 3, 1, 0) transpose, no flip."""
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


def _build_if_needed(layer, shape):
    if not layer.built:
        layer.build(shape)


def heads_weights_from_state_dict(state_dict, layers, prefix="roi_heads."):
    """Copy torchvision RoI-head weights into the layers of this module.

    Parameters
    ----------
    state_dict : mapping str -> array
        A torchvision Mask R-CNN state dict (numpy arrays or torch tensors); current or
        legacy (``mask_head.mask_fcn{k}``) key names.
    layers : dict
        Any of ``"box_head"`` (`BoxHead` or `ConvBoxHead`), ``"box_predictor"``
        (`BoxPredictor`), ``"mask_head"`` (`MaskHead`), ``"mask_predictor"`` (`MaskPredictor`).
        Unbuilt layers are built for torchvision's RoI sizes (7x7 box, 14x14 mask features) with
        the channel counts read from the state dict.
    prefix : str
        Prefix of the RoI-head keys (torchvision: ``"roi_heads."``).

    Returns
    -------
    list of str
        The state-dict keys consumed, in loading order (legacy names where those were used).

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
    """
    if not isinstance(layers, dict):
        raise TypeError(f"`layers` must be a dict of name -> layer; got {type(layers).__name__}.")
    known = {
        "box_head": (BoxHead, ConvBoxHead),
        "box_predictor": (BoxPredictor,),
        "mask_head": (MaskHead,),
        "mask_predictor": (MaskPredictor,),
    }
    for name, layer in layers.items():
        if name not in known:
            raise ValueError(f"`layers` has unknown entry {name!r}; accepted: {sorted(known)}.")
        if not isinstance(layer, known[name]):
            accepted = " or ".join(t.__name__ for t in known[name])
            raise TypeError(f"`layers`[{name!r}] must be a {accepted}; got {type(layer).__name__}.")
    if not isinstance(prefix, str):
        raise TypeError(f"`prefix` must be a str; got {prefix!r}.")
    sd = _StateDict(state_dict)

    head = layers.get("box_head")
    if isinstance(head, BoxHead):
        key = f"{prefix}box_head"
        if not head.built:
            features = sd.get(f"{key}.fc6.weight").shape[1]
            sd.used.pop()
            head.build((None, 7, 7, features // 49))
        h, w, c = head.roi_shape
        _linear(sd, head.fc6, f"{key}.fc6", flatten_chw=(c, h, w))
        _linear(sd, head.fc7, f"{key}.fc7")
    elif isinstance(head, ConvBoxHead):
        key = f"{prefix}box_head"
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

    predictor = layers.get("box_predictor")
    if predictor is not None:
        key = f"{prefix}box_predictor"
        if not predictor.built:
            features = sd.get(f"{key}.cls_score.weight").shape[1]
            sd.used.pop()
            predictor.build((None, features))
        _linear(sd, predictor.cls_score, f"{key}.cls_score")
        _linear(sd, predictor.bbox_pred, f"{key}.bbox_pred")

    head = layers.get("mask_head")
    if head is not None:
        key = f"{prefix}mask_head"
        if not head.built:
            channels = sd.get(f"{key}.0.0.weight", f"{key}.mask_fcn1.weight").shape[1]
            sd.used.pop()
            head.build((None, 14, 14, channels))
        for i, conv in enumerate(head.convs):
            _conv(sd, conv, f"{key}.{i}.0", legacy=f"{key}.mask_fcn{i + 1}")
            if head.norm:
                _batch_norm(sd, head.norms[i], f"{key}.{i}.1")

    predictor = layers.get("mask_predictor")
    if predictor is not None:
        key = f"{prefix}mask_predictor"
        if not predictor.built:
            channels = sd.get(f"{key}.conv5_mask.weight").shape[0]
            sd.used.pop()
            predictor.build((None, 14, 14, channels))
        _conv(sd, predictor.conv5_mask, f"{key}.conv5_mask")
        _conv(sd, predictor.mask_fcn_logits, f"{key}.mask_fcn_logits")
    return list(sd.used)
