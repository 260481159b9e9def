"""Mask R-CNN at inference, assembled from its parts, as torchvision's `MaskRCNN` computes it.

    model = kerasseg.load("maskrcnn_resnet50_fpn", num_classes=91)
    out = model({"images": batch_0_to_255, "image_sizes": sizes})   # sizes optional
    # out["boxes"] (B, D, 4) [y1, x1, y2, x2] in original pixels, "scores", "classes",
    # "masks" (B, D, 28, 28) probabilities, "num_detections" (B,): rows past it are padding.
    full = kerasseg.models.maskrcnn.postprocess.paste_masks(masks, boxes, height, width)

Images are RGB with values 0..255 (any float or integer dtype), zero-padded to a common size
in the batch when their sizes differ, with the real (height, width) of each in `image_sizes`.
Inside: the detection transform (normalise, resize to short side `min_size` / long side
<= `max_size`, pad to a multiple of 32), the ResNet-FPN backbone, the RPN and its proposal
selection, RoIAlign, the box head and class-wise NMS, the mask head on the final boxes, and
the rescaling of boxes to the original image size. Everything runs in the TensorFlow graph,
so the model exports to a SavedModel. `model.fit` trains it with torchvision's sampling and
losses (`train_step`; see `maskrcnn`).

Reference: He et al. 2017, "Mask R-CNN", arXiv:1703.06870; torchvision
`maskrcnn_resnet50_fpn` (v1) and `maskrcnn_resnet50_fpn_v2` (Li et al. 2021,
arXiv:2111.11429).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

from kerasseg.models.base import SegmentationModel
from kerasseg.models.input_checks import ACCEPTED_DTYPES, dtype_name
from kerasseg.models.maskrcnn.backbone import resnet_fpn_backbone
from kerasseg.models.maskrcnn.heads import (
    BoxHead,
    BoxPredictor,
    ConvBoxHead,
    MaskHead,
    MaskPredictor,
)
from kerasseg.models.maskrcnn.losses import LOSS_NAMES, detection_losses
from kerasseg.models.maskrcnn.postprocess import detections_from_head_outputs, rescale_boxes
from kerasseg.models.maskrcnn.rpn import RPNHead, rpn_proposals
from kerasseg.models.maskrcnn.transform import DetectionTransform
from kerasseg.ops import detection as detection_ops
from kerasseg.ops.checks import check_positive_int, check_probability, is_int
from kerasseg.ops.image import is_symbolic

__all__ = [
    "OUTPUTS",
    "ImageSizes",
    "MaskRCNNDetector",
    "MaskRCNNModel",
    "PaddedSize",
    "maskrcnn",
]

OUTPUTS = ("boxes", "scores", "classes", "masks", "num_detections")
MASK_SIZE = 28  # side of the mask head's output


def _output_specs(limit):
    """(shape per image, dtype) of each output, for `limit` detections per image."""
    return {
        "boxes": ((limit, 4), "float32"),
        "scores": ((limit,), "float32"),
        "classes": ((limit,), "int32"),
        "masks": ((limit, MASK_SIZE, MASK_SIZE), "float32"),
        "num_detections": ((), "int32"),
    }


# The arguments of `MaskRCNNDetector` it keeps as attributes of the same names, which its
# `get_config` saves (the sampling options are kept in `training_options`).
_DETECTOR_SETTINGS = (
    "num_classes",
    "version",
    "rpn_pre_nms_top_n",
    "rpn_post_nms_top_n",
    "rpn_nms_threshold",
    "rpn_score_threshold",
    "box_score_threshold",
    "box_nms_threshold",
    "detections_per_image",
    "box_representation_size",
    "rpn_pre_nms_top_n_train",
    "rpn_post_nms_top_n_train",
)


@keras.saving.register_keras_serializable(package="kerasseg")
class MaskRCNNDetector(keras.layers.Layer):
    """RPN, box branch and mask branch of Mask R-CNN at inference, on FPN maps P2..P6.

    Call with `(features, resized_sizes, original_sizes, padded_size)`: the five FPN maps,
    the int32 (B, 2) image sizes after the transform's resize and before it, and the int32
    (2,) size of the padded batch. Returns the dict of `OUTPUTS`, each padded to
    `detections_per_image` rows.

    The other arguments are those of `maskrcnn` with the same names (its
    `**training_options` included), which passes them on.

    Args:
        num_classes: classes including the background class 0 (>= 2).
        version: 1 or 2, the heads of torchvision's `maskrcnn_resnet50_fpn` or `_v2`.
        rpn_score_threshold: the lowest objectness probability of a proposal
            (torchvision's `rpn_score_thresh`, 0.0).
    """

    def __init__(
        self,
        num_classes=91,
        version=1,
        rpn_pre_nms_top_n=1000,
        rpn_post_nms_top_n=1000,
        rpn_nms_threshold=0.7,
        rpn_score_threshold=0.0,
        box_score_threshold=0.05,
        box_nms_threshold=0.5,
        detections_per_image=100,
        box_representation_size=1024,
        rpn_pre_nms_top_n_train=2000,
        rpn_post_nms_top_n_train=2000,
        rpn_batch_size_per_image=256,
        rpn_positive_fraction=0.5,
        rpn_fg_iou_threshold=0.7,
        rpn_bg_iou_threshold=0.3,
        box_batch_size_per_image=512,
        box_positive_fraction=0.25,
        box_fg_iou_threshold=0.5,
        box_bg_iou_threshold=0.5,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not is_int(num_classes) or num_classes < 2:
            raise ValueError(
                "`num_classes` must be an integer >= 2 (background + classes); got "
                f"{num_classes!r}."
            )
        if version not in (1, 2):
            raise ValueError(f"`version` must be 1 or 2; got {version!r}.")
        self.num_classes = int(num_classes)
        self.version = version
        self.rpn_pre_nms_top_n = int(rpn_pre_nms_top_n)
        self.rpn_post_nms_top_n = int(rpn_post_nms_top_n)
        self.rpn_nms_threshold = float(rpn_nms_threshold)
        self.rpn_score_threshold = float(rpn_score_threshold)
        self.box_score_threshold = float(box_score_threshold)
        self.box_nms_threshold = float(box_nms_threshold)
        self.detections_per_image = int(detections_per_image)
        self.box_representation_size = check_positive_int(
            box_representation_size, "box_representation_size"
        )
        self.rpn_pre_nms_top_n_train = check_positive_int(
            rpn_pre_nms_top_n_train, "rpn_pre_nms_top_n_train"
        )
        self.rpn_post_nms_top_n_train = check_positive_int(
            rpn_post_nms_top_n_train, "rpn_post_nms_top_n_train"
        )
        self.training_options = {
            "rpn": _sampling_options(
                "rpn",
                rpn_batch_size_per_image,
                rpn_positive_fraction,
                rpn_fg_iou_threshold,
                rpn_bg_iou_threshold,
            ),
            "roi": _sampling_options(
                "box",
                box_batch_size_per_image,
                box_positive_fraction,
                box_fg_iou_threshold,
                box_bg_iou_threshold,
            ),
        }
        v2 = version == 2
        self.rpn_head = RPNHead(num_anchors=3, channels=256, conv_depth=2 if v2 else 1, name="rpn")
        units = self.box_representation_size
        self.box_head = (
            ConvBoxHead(fc_units=(units,), name="box_head")
            if v2
            else BoxHead(units, name="box_head")
        )
        self.box_predictor = BoxPredictor(num_classes, name="box_predictor")
        self.mask_head = MaskHead(norm=v2, name="mask_head")
        self.mask_predictor = MaskPredictor(num_classes, name="mask_predictor")

    def build(self, input_shape=None):
        self.rpn_head.build([(None, None, None, 256)] * 5)
        self.box_head.build((None, 7, 7, 256))
        self.box_predictor.build((None, self.box_representation_size))
        self.mask_head.build((None, 14, 14, 256))
        self.mask_predictor.build((None, 14, 14, 256))
        self.built = True

    def call(self, features, resized_sizes, original_sizes, padded_size, training=None):
        resized_sizes = ops.cast(resized_sizes, "int32")
        original_sizes = ops.cast(original_sizes, "int32")
        *_, proposals, valid = rpn_proposals(
            self.rpn_head,
            features,
            padded_size,
            resized_sizes,
            training=False,
            pre_nms_top_n=self.rpn_pre_nms_top_n,
            post_nms_top_n=self.rpn_post_nms_top_n,
            nms_threshold=self.rpn_nms_threshold,
            score_threshold=self.rpn_score_threshold,
        )
        levels = list(features[:4])

        def one(index):
            return self._detect_image(
                levels,
                proposals[index, : valid[index]],
                index,
                resized_sizes[index],
                original_sizes[index],
                padded_size,
            )

        specs = _output_specs(self.detections_per_image)
        return tf.map_fn(
            one,
            tf.range(tf.shape(resized_sizes)[0]),
            fn_output_signature={
                key: tf.TensorSpec(shape, dtype) for key, (shape, dtype) in specs.items()
            },
        )

    def _detect_image(self, levels, rois, index, resized_size, original_size, padded_size):
        """The outputs of image `index` from its proposals `rois`, padded to the limit."""
        pooled = detection_ops.multiscale_roi_align(
            levels, rois, tf.fill([tf.shape(rois)[0]], index), padded_size, 7, sampling_ratio=2
        )
        class_logits, box_deltas = self.box_predictor(
            self.box_head(pooled, training=False), training=False
        )
        boxes, scores, labels = detections_from_head_outputs(
            class_logits,
            box_deltas,
            rois,
            resized_size[0],
            resized_size[1],
            score_threshold=self.box_score_threshold,
            nms_threshold=self.box_nms_threshold,
            detections_per_image=self.detections_per_image,
        )
        found = tf.shape(boxes)[0]
        mask_logits = self._mask_logits(levels, boxes, labels, index, padded_size)
        # Under a mixed-precision policy the heads compute in (b)float16; outputs are float32.
        boxes = tf.cast(rescale_boxes(boxes, resized_size, original_size), tf.float32)
        scores = tf.cast(scores, tf.float32)
        mask_logits = tf.cast(mask_logits, tf.float32)
        pad = self.detections_per_image - found
        return {
            "boxes": tf.pad(boxes, [[0, pad], [0, 0]]),
            "scores": tf.pad(scores, [[0, pad]]),
            "classes": tf.pad(labels, [[0, pad]]),
            "masks": tf.pad(tf.sigmoid(mask_logits), [[0, pad], [0, 0], [0, 0]]),
            "num_detections": found,
        }

    def _mask_logits(self, levels, boxes, labels, index, padded_size):
        """(D, 28, 28) mask logits of the detected `boxes`, each in its class's channel."""
        pooled = detection_ops.multiscale_roi_align(
            levels, boxes, tf.fill([tf.shape(boxes)[0]], index), padded_size, 14, sampling_ratio=2
        )
        logits = self.mask_predictor(self.mask_head(pooled, training=False), training=False)
        return tf.gather(tf.transpose(logits, [0, 3, 1, 2]), labels, axis=1, batch_dims=1)

    def compute_output_spec(
        self, features, resized_sizes, original_sizes, padded_size, training=None
    ):
        batch = resized_sizes.shape[0]
        return {
            key: keras.KerasTensor((batch, *shape), dtype=dtype)
            for key, (shape, dtype) in _output_specs(self.detections_per_image).items()
        }

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _DETECTOR_SETTINGS})
        for prefix, key in (("rpn", "rpn"), ("box", "roi")):
            options = self.training_options[key]
            config.update(
                {
                    f"{prefix}_batch_size_per_image": options["batch_size"],
                    f"{prefix}_positive_fraction": options["positive_fraction"],
                    f"{prefix}_fg_iou_threshold": options["fg_iou"],
                    f"{prefix}_bg_iou_threshold": options["bg_iou"],
                }
            )
        return config


def _sampling_options(prefix, batch_size, positive_fraction, fg_iou, bg_iou):
    """The sampler and matcher settings of the RPN or the box head, checked."""
    batch_size = check_positive_int(batch_size, f"{prefix}_batch_size_per_image")
    for name, value in (
        ("positive_fraction", positive_fraction),
        ("fg_iou_threshold", fg_iou),
        ("bg_iou_threshold", bg_iou),
    ):
        check_probability(value, f"{prefix}_{name}")
    if bg_iou > fg_iou:
        raise ValueError(
            f"`{prefix}_bg_iou_threshold` ({bg_iou}) must not exceed `{prefix}_fg_iou_threshold` "
            f"({fg_iou})."
        )
    return {
        "batch_size": batch_size,
        "positive_fraction": float(positive_fraction),
        "fg_iou": float(fg_iou),
        "bg_iou": float(bg_iou),
    }


@keras.saving.register_keras_serializable(package="kerasseg")
class MaskRCNNModel(SegmentationModel):
    """The functional Mask R-CNN: checks its inputs and also takes a bare image batch.

    `model(images)` is `model({"images": images, "image_sizes": None})`: every image fills
    the whole batch size.
    """

    def __call__(self, inputs, *args, **kwargs):
        inputs = _standard_inputs(inputs)
        _check_detection_inputs(inputs["images"], inputs["image_sizes"])
        return keras.Model.__call__(self, inputs, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(_standard_inputs(x), *args, **kwargs)

    @property
    def backbone_name(self):
        """Name of the ResNet-FPN sub-model."""
        return next(layer.name for layer in self.layers if isinstance(layer, keras.Model))

    @property
    def metrics(self):
        return [*self._loss_trackers(), *super().metrics]

    def _loss_trackers(self):
        if not hasattr(self, "_detection_trackers"):
            self._detection_trackers = [
                keras.metrics.Mean(name=name) for name in ("loss", *LOSS_NAMES)
            ]
        return self._detection_trackers

    def _loss_terms(self, data, training):
        x, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(targets, dict):
            raise ValueError(
                "Training Mask R-CNN needs (inputs, targets) with targets the padded instance "
                "dict of `kerasseg.data.instances.to_padded` (boxes, class_ids, masks, "
                f"num_instances); got {type(targets).__name__}."
            )
        _check_training_targets(targets)
        inputs = _standard_inputs(x)
        _check_detection_inputs(inputs["images"], inputs["image_sizes"])
        terms = detection_losses(
            self, inputs["images"], inputs["image_sizes"], targets, training=training
        )
        total = tf.add_n(list(terms.values()))
        return total, terms

    def _track(self, total, terms):
        values = (total, *terms.values())
        for tracker, value in zip(self._loss_trackers(), values, strict=True):
            tracker.update_state(unscale_loss_for_distribution(value))
        return {tracker.name: tracker.result() for tracker in self._loss_trackers()}

    def train_step(self, data):
        """One optimiser step on the sum of the five losses (torchvision's weighting: 1 each)."""
        with tf.GradientTape() as tape:
            total, terms = self._loss_terms(data, training=True)
            total = scale_loss_for_distribution(total)
            terms = {name: scale_loss_for_distribution(value) for name, value in terms.items()}
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return self._track(total, terms)

    def test_step(self, data):
        """The training losses with the network in inference mode (no update)."""
        total, terms = self._loss_terms(data, training=False)
        terms = {name: scale_loss_for_distribution(value) for name, value in terms.items()}
        return self._track(scale_loss_for_distribution(total), terms)


_TARGET_KEYS = ("boxes", "class_ids", "masks", "num_instances")


def _check_training_targets(targets):
    missing = [key for key in _TARGET_KEYS if key not in targets]
    if missing:
        raise ValueError(
            f"Mask R-CNN targets need the keys {list(_TARGET_KEYS)} (padded and batched with "
            f"`kerasseg.data.instances.to_padded`); missing {missing}."
        )
    if "is_crowd" in targets:
        raise ValueError(
            "Mask R-CNN training does not take crowd regions ('is_crowd'); remove the crowd "
            "instances (or the key when none is set) from the targets."
        )
    for key, rank in (("boxes", 3), ("class_ids", 2), ("masks", 4), ("num_instances", 1)):
        shape = tuple(targets[key].shape)
        if len(shape) != rank:
            raise ValueError(
                f"targets[{key!r}] must have rank {rank} (a batch of padded instances); got "
                f"shape {shape}."
            )


def _standard_inputs(inputs):
    """{"images": ..., "image_sizes": ... or None} from a dict or a bare image batch."""
    if not isinstance(inputs, dict):
        return {"images": inputs, "image_sizes": None}
    unknown = sorted(set(inputs) - {"images", "image_sizes"})
    if unknown or "images" not in inputs:
        raise ValueError(
            f"Mask R-CNN takes {{'images': (B, H, W, 3), 'image_sizes': (B, 2) or None}}; "
            f"got the keys {sorted(inputs)}."
        )
    return {"image_sizes": None, **inputs}


def _check_detection_inputs(images, image_sizes):
    shape = tuple(getattr(images, "shape", np.shape(images)))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"`images` must be an RGB batch (batch, height, width, 3); got shape {shape}. Add a "
            "batch axis with x[None]; repeat grey images to 3 channels."
        )
    if 0 in shape[1:3]:
        raise ValueError(f"`images` must not be empty; got shape {shape}.")
    dtype = dtype_name(images)
    if dtype not in ACCEPTED_DTYPES:
        raise TypeError(
            f"`images` must have a numeric dtype, one of {ACCEPTED_DTYPES}; got {dtype}."
        )
    if image_sizes is None:
        return
    sizes_shape = tuple(getattr(image_sizes, "shape", np.shape(image_sizes)))
    if len(sizes_shape) != 2 or sizes_shape[-1] != 2 or sizes_shape[0] not in (None, shape[0]):
        raise ValueError(
            f"`image_sizes` must have shape (batch, 2) = ({shape[0]}, 2), one (height, width) "
            f"per image; got {sizes_shape}."
        )
    if is_symbolic(image_sizes):  # traced: the graph checks the values (`ImageSizes`)
        return
    sizes = np.asarray(ops.convert_to_numpy(image_sizes))
    limits = np.array(shape[1:3])
    if sizes.dtype.kind not in "iu" or (sizes < 1).any() or (sizes > limits).any():
        raise ValueError(
            f"`image_sizes` must hold integers from 1 up to the batch's (height, width) = "
            f"{tuple(limits)}; got {sizes.tolist()}."
        )


@keras.saving.register_keras_serializable(package="kerasseg")
class ImageSizes(keras.layers.Layer):
    """(B, 2) int32 image sizes: the given ones (checked in the graph), or the batch's size."""

    def call(self, images, image_sizes=None):
        shape = ops.shape(images)
        full = ops.stack([shape[1], shape[2]])
        if image_sizes is None:
            return ops.tile(ops.reshape(full, (1, 2)), (shape[0], 1))
        sizes = ops.cast(image_sizes, "int32")
        valid = tf.reduce_all((sizes >= 1) & (sizes <= full[None]))
        check = tf.debugging.Assert(
            valid, ["`image_sizes` must lie in 1..(height, width) of the batch", sizes, full]
        )
        with tf.control_dependencies([check]):
            return tf.identity(sizes)

    def compute_output_spec(self, images, image_sizes=None):
        return keras.KerasTensor((images.shape[0], 2), dtype="int32")


@keras.saving.register_keras_serializable(package="kerasseg")
class PaddedSize(keras.layers.Layer):
    """The (height, width) of a batch, int32 (2,)."""

    def call(self, batch):
        shape = ops.shape(batch)
        return ops.cast(ops.stack([shape[1], shape[2]]), "int32")

    def compute_output_spec(self, batch):
        return keras.KerasTensor((2,), dtype="int32")


def maskrcnn(
    num_classes=91,
    backbone="resnet50",
    version=1,
    min_size=800,
    max_size=1333,
    trainable_backbone_layers=3,
    rpn_pre_nms_top_n=1000,
    rpn_post_nms_top_n=1000,
    rpn_nms_threshold=0.7,
    box_score_threshold=0.05,
    box_nms_threshold=0.5,
    detections_per_image=100,
    box_representation_size=1024,
    name=None,
    **training_options,
):
    """Build Mask R-CNN with a ResNet-FPN backbone (inference and `model.fit`).

    Args:
        num_classes: classes including the background class 0 (COCO: 91, torchvision's
            category-id indexing with its unused slots).
        backbone: "resnet18", "resnet34", "resnet50" or "resnet101" (FPN on top).
        version: 1 (torchvision `maskrcnn_resnet50_fpn`: frozen BN with eps 0 as the COCO
            weights need, two-FC box head) or 2 (`maskrcnn_resnet50_fpn_v2`: BatchNorm
            backbone and FPN, two-conv RPN head, four-conv box head, normalised mask head).
        min_size: the short side after the resize (torchvision: 800).
        max_size: the largest long side after the resize (torchvision: 1333).
        trainable_backbone_layers: ResNet stages that would train (0..5, torchvision's 3).
        rpn_pre_nms_top_n: proposals kept per level before NMS. Dense images (ISBI 2012
            cells, about 130 per slice) need more than the defaults of both counts.
        rpn_post_nms_top_n: proposals kept per image after NMS.
        rpn_nms_threshold: IoU of the proposals' NMS (0.7).
        box_score_threshold: the lowest class score of a detection (0.05).
        box_nms_threshold: IoU of the detections' class-wise NMS (0.5).
        detections_per_image: the most detections per image (100).
        box_representation_size: units of the box head's fully connected layers (torchvision's
            `representation_size`, 1024; the FC after the v2 head's convolutions). Smaller
            values make a lighter model (256 for the ISBI 2012 preset).
        name: model name (default "maskrcnn_<backbone>_fpn[_v2]").
        **training_options: torchvision's training settings, its defaults in brackets:
            `rpn_pre_nms_top_n_train` (2000), `rpn_post_nms_top_n_train` (2000),
            `rpn_batch_size_per_image` (256), `rpn_positive_fraction` (0.5),
            `rpn_fg_iou_threshold` (0.7), `rpn_bg_iou_threshold` (0.3),
            `box_batch_size_per_image` (512), `box_positive_fraction` (0.25),
            `box_fg_iou_threshold` (0.5), `box_bg_iou_threshold` (0.5).

    Training: `model.compile(optimizer=...)` (no loss: the model computes its five losses,
    `kerasseg.models.maskrcnn.losses`), then `model.fit` on batches `(inputs, targets)`:
    inputs ``{"images": (B, H, W, 3) 0..255, "image_sizes": (B, 2)}`` (or a bare image
    batch), targets the padded instance dict of `kerasseg.data.instances.to_padded`
    (boxes, class_ids, masks (B, M, H, W), num_instances), e.g. from
    `kerasseg.data.instance_dataset`. Frozen stages follow `trainable_backbone_layers`.

    Returns:
        A `SegmentationModel` with inputs `images` (B, H, W, 3) and optional `image_sizes`
        (B, 2) int32, and the outputs of `OUTPUTS`.
    """
    depth = _backbone_depth(backbone, version)
    inputs, sizes, batch, resized = _transformed_inputs(min_size, max_size)
    features = _backbone_network(depth, version, trainable_backbone_layers)(batch)
    detector = MaskRCNNDetector(
        num_classes,
        version=version,
        rpn_pre_nms_top_n=rpn_pre_nms_top_n,
        rpn_post_nms_top_n=rpn_post_nms_top_n,
        rpn_nms_threshold=rpn_nms_threshold,
        box_score_threshold=box_score_threshold,
        box_nms_threshold=box_nms_threshold,
        detections_per_image=detections_per_image,
        box_representation_size=box_representation_size,
        name="detector",
        **training_options,
    )
    levels = [features[f"P{level}"] for level in range(2, 7)]
    outputs = detector(levels, resized, sizes, PaddedSize(name="padded_size")(batch))
    suffix = "_v2" if version == 2 else ""
    return MaskRCNNModel(inputs, outputs, name=name or f"maskrcnn_{backbone}_fpn{suffix}")


_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


def _backbone_depth(backbone, version):
    """The ResNet depth of `backbone`, after checking it and `version`."""
    if backbone not in _DEPTHS:
        raise ValueError(f"`backbone` must be one of {sorted(_DEPTHS)}; got {backbone!r}.")
    if version not in (1, 2):
        raise ValueError(f"`version` must be 1 or 2; got {version!r}.")
    return _DEPTHS[backbone]


def _transformed_inputs(min_size, max_size):
    """The model's inputs, the (B, 2) image sizes, and the transformed batch with its sizes."""
    images = keras.Input((None, None, 3), name="images")
    image_sizes = keras.Input((2,), dtype="int32", name="image_sizes", optional=True)
    sizes = ImageSizes(name="image_size")(images, image_sizes)
    batch, resized = DetectionTransform(min_size, max_size, 32, name="transform")(images, sizes)
    return {"images": images, "image_sizes": image_sizes}, sizes, batch, resized


def _backbone_network(depth, version, trainable_layers):
    """The ResNet-FPN of `version`: frozen BN (eps 0) for v1, BatchNorm in ResNet and FPN for v2."""
    if version == 1:
        return resnet_fpn_backbone(depth, norm="frozen", trainable_layers=trainable_layers)
    return resnet_fpn_backbone(
        depth, norm="batch", trainable_layers=trainable_layers, fpn_norm="batch"
    )
