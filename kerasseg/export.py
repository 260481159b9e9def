"""Export models as TF-Serving SavedModels that take encoded images and return masks.

    kerasseg.export("otsu", "serving/otsu")                 # -> serving/otsu/1/
    kerasseg.export(model, "serving/unet", version=2, probabilities=True)

The SavedModel holds everything a client would otherwise re-implement: decoding, channel
conversion, resizing or padding to what the model accepts, input normalisation, the model
itself (called with `training=False` through `keras.export.ExportArchive`; a bare
`model.export` runs BatchNorm in training mode for some models), and post-processing.

Signatures (method `tensorflow/serving/predict`):

- `serving_default`: `image_bytes`, string [N] (1-D; other shapes are refused), each an
  8-bit PNG or a JPEG with 1 (grey) or 3 (RGB) channels, sides >= `min_size` and at most
  `max_pixels` pixels; images in a request may differ in size. Grey images are repeated to
  RGB for 3-channel models; RGB images become grey with the BT.709 luma weights of
  `skimage.color.rgb2gray` (rounded for integer models).
- `serve_tensor`: `images`, float32 [N, H, W, C] with the values as stored (0..255), C the
  model's channel count: tensors are not converted between grey and RGB, another C is
  refused. Integer (classical) models require whole numbers in their dtype's range.

Both return `mask` (uint8 class ids, uint16 for models with more than 256 labels, [N, H, W]
at each image's original size; smaller images of a mixed-size request are padded with 0 at
the bottom/right up to the largest), `image_size` (int32 [N, 2], height and width of each
image) and `mask_png_bytes` (string [N], the mask of each image as a PNG at its own size,
which TF-Serving's REST API returns as `{"b64": ...}`). Semantic models add `probabilities`
(float32 [N, h, w, C] at the model's resolution: the input size, or its fixed input size)
when exported with `probabilities=True`. Classical models return their other outputs as
well (thresholds, cluster centres, ...), image-shaped ones padded like `mask`; edge-magnitude
and Laplacian models, which have no mask, return their float map instead of the three masks.
Models with a second input (region growing's `seeds`) take it as a second signature input.
Instance models (Mask R-CNN) return `boxes` (float32 [N, D, 4], [y1, x1, y2, x2] in original
pixels), `scores` [N, D], `classes` int32 [N, D], `masks` (uint8 [N, D, H, W], each detection's
mask pasted at the original image size and thresholded at `threshold`), `num_detections`
int32 [N] (rows past it are padding) and `image_size`.

An empty request (N = 0) gives empty outputs of the same dtypes: N = 0 on the first axis,
0 for the other unknown axes, except that `serve_tensor` keeps its H and W (a `mask` of
[0, H, W]). So an empty `image_bytes` gives `mask` [0, 0, 0], `probabilities` [0, 0, 0, C]
(or [0, h, w, C] for a fixed input size), `image_size` [0, 2] and `mask_png_bytes` [0].

Every bad request (an empty string or non-image bytes, a truncated file, an image too small or too
large, 16-bit or alpha channels, compressed data damaged behind a valid header, NaN, a
wrong number of axes or channels) fails with an `InvalidArgument` error naming the image
(`image_bytes[i]`) or the input, never with a silently wrong mask.
"""

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from kerasseg import registry
from kerasseg.data.decode import (
    decode_png_or_jpeg,
    file_format,
    jpeg_is_complete,
    png_is_complete,
)
from kerasseg.inference import output_is_logits, task_of
from kerasseg.inference.colours import known_palette
from kerasseg.models.maskrcnn.postprocess import paste_masks
from kerasseg.ops.checks import check_int, check_probability, is_int
from kerasseg.ops.image import INTEGER_LIMITS, LUMA_WEIGHTS
from kerasseg.preprocessing import MODES, ImagePreprocessing

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MIN_SIZE", "export"]

DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_MIN_SIZE = 8
COMPUTE_DTYPES = ("float32", "bfloat16")
# The classical output that is the segmentation, in order of preference.
MASK_OUTPUTS = ("mask", "labels", "edges")
METADATA_FILE = "assets.extra/kerasseg.json"


@dataclasses.dataclass(frozen=True)
class _Output:
    """One signature output: dtype, per-image shape, and whether it has the image's size."""

    dtype: tf.DType
    shape: tuple
    image_shaped: bool
    height_axis: int = 0  # of the per-image value, where image-shaped


def _message(*parts):
    return tf.strings.join(
        [
            p if isinstance(p, str) or p.dtype == tf.string else tf.strings.as_string(p)
            for p in parts
        ]
    )


def _assert(condition, *parts):
    return tf.debugging.Assert(condition, [_message(*parts)])


def _checked(value, *assertions):
    with tf.control_dependencies([a for a in assertions if a is not None]):
        return tf.identity(value)


class _Plan:
    """How to run one model for serving: its inputs, the size rule and the post-processing."""

    def __init__(self, model, *, preprocessing, threshold, probabilities, num_classes,
                 min_size, max_pixels):  # fmt: skip
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model or a registry name; got {model!r}.")
        if preprocessing not in MODES:
            raise ValueError(
                f"`preprocessing` must be one of {sorted(MODES)}; got {preprocessing!r}."
            )
        check_probability(threshold, "threshold")
        self.model = model
        self.threshold = float(threshold)
        self.min_size = int(min_size)
        self.max_pixels = int(max_pixels)
        image_input = next((t for t in model.inputs if t.name == "images"), model.inputs[0])
        self.image_name = image_input.name
        self.channels = image_input.shape[-1]
        if self.channels not in (1, 3):
            raise ValueError(
                f"`model`: exported models take 1- or 3-channel images; this one takes "
                f"{self.channels} channel(s) (input shape {tuple(image_input.shape)})."
            )
        self.input_dtype = tf.as_dtype(keras.backend.standardize_dtype(image_input.dtype))
        self.instance = task_of(model) == "instance"
        # Instance models size their own batch ("image_sizes"); others take extras as inputs.
        others = [t for t in model.inputs if t is not image_input]
        self.extra_inputs = [] if self.instance else others
        fixed = tuple(image_input.shape[1:3])
        self.fixed_size = fixed if None not in fixed else None
        self.size_divisor = int(getattr(model, "size_divisor", 1) or 1)
        if int(getattr(model, "size_offset", 0) or 0):
            raise ValueError(
                "`model`: its output is smaller than its input (valid convolutions, "
                "size_offset != 0); export a model built with padding='same'."
            )
        if self.fixed_size is None and self.size_divisor == 1:
            self.min_size = max(self.min_size, int(getattr(model, "min_size", 1) or 1))
        self.semantic = not isinstance(model.output, dict)
        self.task = "semantic" if self.semantic else "instance" if self.instance else "classical"
        self.preprocess = None
        if preprocessing != "none":
            self.preprocess = ImagePreprocessing(preprocessing)
            self.preprocess.build((None, None, None, self.channels))
        if self.semantic:
            if num_classes is not None:
                raise ValueError(
                    "`num_classes` applies to classical models; a semantic model's classes are "
                    "its output channels."
                )
            self._plan_semantic(probabilities)
        elif self.instance:
            self._plan_instance(num_classes, probabilities, preprocessing)
        else:
            self._plan_classical(num_classes, probabilities, preprocessing)

    def _plan_semantic(self, probabilities):
        if len(self.model.outputs) > 1:
            raise ValueError(
                f"`model` has {len(self.model.outputs)} outputs {list(self.model.output_names)}; "
                "export takes a semantic model with one output. For a U-Net++ built with "
                "`deep_supervision=True`, export `kerasseg.models.unetplusplus."
                "inference_model(model)` (the mean of its heads, or `head=j` for one)."
            )
        classes = self.model.output.shape[-1]
        if len(self.model.output.shape) != 4 or classes is None:
            raise ValueError(
                "`model` must output (batch, height, width, classes); got output shape "
                f"{tuple(self.model.output.shape)}."
            )
        self.classes = classes
        self.from_logits = output_is_logits(self.model)
        self.mask_key = "mask"
        self.mask_dtype = tf.uint8 if max(classes, 2) <= 256 else tf.uint16
        self.outputs = {"mask": _Output(self.mask_dtype, (None, None), True)}
        if probabilities:
            spatial = self.fixed_size or (None, None)
            self.outputs["probabilities"] = _Output(
                tf.float32, (*spatial, classes), self.fixed_size is None
            )

    def _plan_instance(self, num_classes, probabilities, preprocessing):
        if probabilities or num_classes is not None or preprocessing != "none":
            raise ValueError(
                "`probabilities`, `num_classes` and `preprocessing` do not apply to instance "
                "models (they normalise inside and give one score per detection)."
            )
        limit = self.model.output["boxes"].shape[1]
        self.mask_key = None
        self.outputs = {
            "boxes": _Output(tf.float32, (limit, 4), False),
            "scores": _Output(tf.float32, (limit,), False),
            "classes": _Output(tf.int32, (limit,), False),
            "masks": _Output(tf.uint8, (limit, None, None), True, height_axis=1),
            "num_detections": _Output(tf.int32, (), False),
        }

    def _plan_classical(self, num_classes, probabilities, preprocessing):
        if probabilities:
            raise ValueError("`probabilities`: classical models have no class probabilities.")
        if preprocessing != "none":
            raise ValueError(
                f"`preprocessing`: classical models take images as stored; got {preprocessing!r}."
            )
        self.outputs = {}
        self.mask_key = next((k for k in MASK_OUTPUTS if k in self.model.output), None)
        for name, tensor in self.model.output.items():
            shape = tuple(tensor.shape[1:])
            image_shaped = len(shape) == 3 and shape[:2] == (None, None)
            dtype = tf.as_dtype(keras.backend.standardize_dtype(tensor.dtype))
            if name == self.mask_key:
                self.mask_dtype = tf.uint8 if num_classes and num_classes <= 256 else tf.uint16
                self.outputs["mask"] = _Output(self.mask_dtype, (None, None), True)
            else:
                self.outputs[name] = _Output(dtype, shape, image_shaped)

    # ------------------------------------------------------------------ the model itself

    def run(self, images, extras):
        """Batched outputs for `images` (B, H, W, C) of the model's input dtype."""
        if self.semantic:
            return self._run_semantic(images)
        if self.instance:
            return self._run_instance(images)
        inputs = images
        if self.extra_inputs:
            inputs = {self.image_name: images}
            inputs.update({t.name: e for t, e in zip(self.extra_inputs, extras, strict=True)})
        results = self.model(inputs, training=False)
        outputs = {name: results[name] for name in self.outputs if name != "mask"}
        if self.mask_key is not None:
            outputs["mask"] = self._mask_dtype(results[self.mask_key][..., 0])
        return outputs

    def _run_instance(self, images):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        results = self.model({"images": images, "image_sizes": None}, training=False)
        pasted = paste_masks(results["masks"], results["boxes"], height, width)
        outputs = {name: results[name] for name in self.outputs}
        outputs["masks"] = tf.cast(pasted > self.threshold, tf.uint8)
        return outputs

    def _run_semantic(self, images):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        x = tf.cast(images, tf.float32)
        if self.fixed_size is not None:
            x = tf.image.resize(x, self.fixed_size, method="bilinear")
        elif self.size_divisor > 1:
            # Zero padding at the bottom/right, as `kerasseg.inference` pads.
            pad_h = -height % self.size_divisor
            pad_w = -width % self.size_divisor
            x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        if self.preprocess is not None:
            x = self.preprocess(x)
        probs = tf.cast(self.model(x, training=False), tf.float32)
        if self.fixed_size is None:
            probs = probs[:, :height, :width]
        if self.from_logits:
            probs = tf.sigmoid(probs) if self.classes == 1 else tf.nn.softmax(probs, axis=-1)
        if self.classes == 1:
            mask = tf.cast(probs[..., 0] > self.threshold, tf.int32)
        else:
            mask = tf.argmax(probs, axis=-1, output_type=tf.int32)
        if self.fixed_size is not None:
            mask = tf.image.resize(mask[..., None], (height, width), method="nearest")[..., 0]
        outputs = {"mask": self._mask_dtype(mask)}
        if "probabilities" in self.outputs:
            outputs["probabilities"] = probs
        return outputs

    def _mask_dtype(self, mask):
        top = self.mask_dtype.max
        check = _assert(
            tf.reduce_all((mask >= 0) & (mask <= top)),
            f"the model gave labels outside 0..{top}, which a {self.mask_dtype.name} mask "
            "cannot hold",
        )
        return tf.cast(_checked(mask, check), self.mask_dtype)

    def empty(self, height, width):
        """The outputs of an empty request: zero images, `height` x `width` where image-shaped."""
        outputs = {}
        for name, spec in self.outputs.items():
            dims = [0, *spec.shape]
            if spec.image_shaped:
                axis = spec.height_axis + 1
                dims[axis : axis + 2] = [height, width]
            dims = tf.stack([tf.cast(0 if d is None else d, tf.int32) for d in dims])
            outputs[name] = tf.zeros(dims, spec.dtype)
        if "mask" in self.outputs:
            outputs["mask_png_bytes"] = tf.zeros([0], tf.string)
        return outputs

    # ------------------------------------------------------------------ request checks

    def check_size(self, height, width, name, skip=False):
        height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
        return [
            _assert(
                tf.logical_or(skip, tf.minimum(height, width) >= self.min_size),
                name,
                " is ",
                height,
                "x",
                width,
                f" (HxW); images must be at least {self.min_size} pixels on each side",
            ),
            _assert(
                tf.logical_or(skip, height * width <= self.max_pixels),
                name,
                " is ",
                height,
                "x",
                width,
                f" (HxW); images may have at most {self.max_pixels} pixels (export option "
                "max_pixels)",
            ),
        ]

    def image_size(self, contents, index):
        """(height, width) from the file header, after checking format, depth and channels."""
        name = _message("image_bytes[", index, "]")
        length = tf.strings.length(contents)
        is_png, is_jpeg, _ = file_format(contents)
        known = _assert(
            is_png | is_jpeg,
            name,
            " (",
            length,
            " bytes) is not a PNG or JPEG image",
        )
        with tf.control_dependencies([known]):
            size = tf.cond(
                is_png,
                lambda: self._png_size(contents, name),
                lambda: self._jpeg_size(contents, name),
            )
        return _checked(size, *self.check_size(size[0], size[1], name))

    @staticmethod
    def _png_size(contents, name):
        complete = _assert(png_is_complete(contents), "truncated or corrupt PNG ", name)
        with tf.control_dependencies([complete]):
            header = tf.cast(
                tf.io.decode_raw(tf.strings.substr(contents, 16, 10), tf.uint8), tf.int64
            )
        width = header[0] * 2**24 + header[1] * 2**16 + header[2] * 2**8 + header[3]
        height = header[4] * 2**24 + header[5] * 2**16 + header[6] * 2**8 + header[7]
        depth, colour = header[8], header[9]
        checks = [
            _assert(
                tf.equal(depth, 8),
                name,
                " is a PNG with ",
                depth,
                "-bit samples; send 8-bit PNG or JPEG images",
            ),
            _assert(
                (colour != 4) & (colour != 6),
                name,
                " is a PNG with an alpha channel; send grey (1 channel) or RGB (3 channels)",
            ),
        ]
        return _checked(tf.cast(tf.stack([height, width]), tf.int32), *checks)

    @staticmethod
    def _jpeg_size(contents, name):
        complete = _assert(jpeg_is_complete(contents), "truncated or corrupt JPEG ", name)
        with tf.control_dependencies([complete]):
            shape = tf.image.extract_jpeg_shape(contents)
        channels = _assert(
            (shape[2] == 1) | (shape[2] == 3),
            name,
            " is a JPEG with ",
            shape[2],
            " channels (CMYK?); send grey (1 channel) or RGB (3 channels)",
        )
        return _checked(shape[:2], channels)

    def convert(self, pixels, count, index):
        """One decoded image (H, W, `count`) as (H, W, C) of the model's channels and dtype."""
        name = _message("image_bytes[", index, "]")
        check = _assert(
            (count == 1) | (count == 3),
            name,
            " has ",
            count,
            " channels (a palette with transparency?); send grey (1) or RGB (3)",
        )
        pixels = _checked(pixels, check)
        if self.channels == 3:
            pixels = tf.cond(
                count == 1, lambda: tf.tile(pixels[..., :1], [1, 1, 3]), lambda: pixels[..., :3]
            )
            return tf.ensure_shape(tf.cast(pixels, self.input_dtype), [None, None, 3])
        grey = tf.cond(
            count == 3,
            lambda: tf.reduce_sum(tf.cast(pixels[..., :3], tf.float32) * LUMA_WEIGHTS, -1, True),
            lambda: tf.cast(pixels[..., :1], tf.float32),
        )
        if self.input_dtype.is_integer:
            grey = tf.round(grey)
        return tf.ensure_shape(tf.cast(grey, self.input_dtype), [None, None, 1])

    def tensor_checks(self, images):
        """Assertions on a `serve_tensor` batch (rank and channels already checked)."""
        shape = tf.shape(images)
        # An empty batch holds no image to check: it gives empty outputs whatever H and W.
        checks = self.check_size(shape[1], shape[2], "images", skip=tf.equal(shape[0], 0))
        checks.append(_assert(tf.reduce_all(tf.math.is_finite(images)), "images hold NaN or inf"))
        if self.input_dtype.is_integer:
            low, high = INTEGER_LIMITS[self.input_dtype.name]
            checks.append(
                _assert(
                    tf.reduce_all(
                        (images == tf.round(images)) & (images >= low) & (images <= high)
                    ),
                    f"images must hold whole numbers in {low}..{high} for this "
                    f"{self.input_dtype.name} model",
                )
            )
        return checks


def _pad_to(value, height, width, axis=0):
    """Zero-pad `value` at the bottom/right of its axes `axis`, `axis + 1` to height x width."""
    shape = tf.shape(value)
    padding = [[0, 0]] * len(value.shape)
    padding[axis] = [0, height - shape[axis]]
    padding[axis + 1] = [0, width - shape[axis + 1]]
    return tf.pad(value, padding)


def _runtime_shape(tensor):
    """The shape `tensor` has when the signature runs, as an int32 vector of unknown length.

    A signature's input spec is not enforced when it is called (TF-Serving feeds any shape),
    and TensorFlow's graph optimiser replaces `tf.rank` of an input by the rank of the spec.
    A round trip through `serialize_tensor` hides the static shape, so the rank is read at
    run time.
    """
    shape = tf.io.parse_tensor(tf.io.serialize_tensor(tf.shape(tensor)), tf.int32)
    return tf.ensure_shape(shape, [None])


def _check_rank(tensor, rank, what):
    """`tensor` after an assertion that it has `rank` axes; `what` opens the message."""
    shape = _runtime_shape(tensor)
    text = tf.strings.reduce_join(tf.strings.as_string(shape), separator=", ")
    rank_given = tf.size(shape)
    check = _assert(
        tf.equal(rank_given, rank), what, "; got shape [", text, "] (rank ", rank_given, ")"
    )
    return _checked(tensor, check)


def _decode_all(image_bytes):
    """Decode every image of a request whose headers passed their checks.

    Returns uint8 pixels [N, H, W, C] (each image zero-padded to the largest height, width
    and channel count) and int32 shapes [N, 3] (each image's own height, width, channels).

    A decoder error (damaged compressed data behind a valid header) cannot be caught inside
    a graph, and its message does not say which image failed. Decoding in a `tf.data` map
    with `ignore_errors` drops a failing image instead; the first index missing from what
    comes back is then reported by an assertion that names it.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]

    def decode(i):
        pixels = decode_png_or_jpeg(image_bytes[i], path=_message("image_bytes[", i, "]"))
        return i, pixels, tf.shape(pixels)

    # An end marker keeps the single batch non-empty (an empty request included).
    end = (tf.constant(-1, tf.int64), tf.zeros([0, 0, 1], tf.uint8), tf.constant([0, 0, 1]))
    decoded = (
        tf.data.Dataset.range(count)
        .map(decode)
        .ignore_errors()
        .concatenate(tf.data.Dataset.from_tensors(end))
        .padded_batch(count + 1)
        .get_single_element()
    )
    indices, pixels, shapes = (value[:-1] for value in decoded)
    done = tf.shape(indices, out_type=tf.int64)[0]
    positions = tf.range(done)
    first = tf.reduce_min(tf.concat([tf.boolean_mask(positions, indices != positions), [done]], 0))
    lengths = tf.concat([tf.strings.length(image_bytes), [0]], 0)  # `first` may be N
    check = _assert(
        tf.equal(done, count),
        "image_bytes[",
        first,
        "]: cannot decode (",
        tf.gather(lengths, first),
        " bytes): its header is valid but the decoder rejected the image data (damaged "
        "or incomplete compressed data)",
    )
    return _checked(pixels, check), shapes


def _serve_bytes(plan, image_bytes, extras):
    """The `serving_default` outputs for a string [N] of encoded images."""
    image_bytes = _check_rank(image_bytes, 1, "image_bytes must be a 1-D list of encoded images")
    count = tf.shape(image_bytes)[0]
    sizes = tf.map_fn(
        lambda i: plan.image_size(image_bytes[i], i),
        tf.range(count),
        fn_output_signature=tf.TensorSpec([2], tf.int32),
    )
    largest = tf.reduce_max(tf.concat([sizes, tf.zeros([1, 2], tf.int32)], 0), axis=0)
    # Nothing is decoded before every header passed its checks (size limits included).
    with tf.control_dependencies([sizes]):
        image_bytes = tf.identity(image_bytes)
    pixels, shapes = _decode_all(image_bytes)

    def one(i):
        height, width, channels = shapes[i, 0], shapes[i, 1], shapes[i, 2]
        image = plan.convert(pixels[i, :height, :width, :channels], channels, i)
        outputs = plan.run(image[None], [e[i : i + 1] for e in extras])
        outputs = {name: value[0] for name, value in outputs.items()}
        if "mask" in plan.outputs:
            outputs["mask_png_bytes"] = tf.io.encode_png(outputs["mask"][..., None])
        for name, spec in plan.outputs.items():
            if spec.image_shaped:
                outputs[name] = _pad_to(outputs[name], largest[0], largest[1], spec.height_axis)
        return outputs

    signature = {name: tf.TensorSpec(spec.shape, spec.dtype) for name, spec in plan.outputs.items()}
    if "mask" in plan.outputs:
        signature["mask_png_bytes"] = tf.TensorSpec([], tf.string)
    outputs = tf.cond(
        count > 0,
        lambda: tf.map_fn(one, tf.range(count), fn_output_signature=signature),
        lambda: plan.empty(0, 0),
    )
    outputs["image_size"] = sizes
    return outputs


def _serve_tensor(plan, images, extras):
    """The `serve_tensor` outputs for a float32 [N, H, W, C] batch."""
    images = _check_rank(images, 4, "images must be a 4-D batch [N, H, W, C]")
    shape = tf.shape(images)
    channels = _assert(
        tf.equal(shape[3], plan.channels),
        f"images must have {plan.channels} channel(s) (last axis); got ",
        shape[3],
    )
    images = _checked(images, channels)
    images = _checked(images, *plan.tensor_checks(images))

    def run():
        outputs = plan.run(tf.cast(images, plan.input_dtype), list(extras))
        if "mask" in plan.outputs:
            outputs["mask_png_bytes"] = tf.map_fn(
                lambda m: tf.io.encode_png(m[..., None]),
                outputs["mask"],
                fn_output_signature=tf.TensorSpec([], tf.string),
            )
        return outputs

    outputs = tf.cond(shape[0] > 0, run, lambda: plan.empty(shape[1], shape[2]))
    outputs["image_size"] = tf.tile(shape[None, 1:3], [shape[0], 1])
    return outputs


def _signatures(plan):
    """The two signatures, with their input specs: bytes in (`serving_default`) and float
    tensors in (`serve_tensor`)."""
    extra_specs = [
        tf.TensorSpec(
            (None, *t.shape[1:]),
            tf.as_dtype(keras.backend.standardize_dtype(t.dtype)),
            name=t.name,
        )
        for t in plan.extra_inputs
    ]

    def serve_bytes(image_bytes, *extras):
        return _serve_bytes(plan, image_bytes, extras)

    def serve_tensor(images, *extras):
        return _serve_tensor(plan, images, extras)

    bytes_spec = [tf.TensorSpec([None], tf.string, name="image_bytes"), *extra_specs]
    tensor_spec = [
        tf.TensorSpec([None, None, None, plan.channels], tf.float32, name="images"),
        *extra_specs,
    ]
    return (serve_bytes, bytes_spec), (serve_tensor, tensor_spec)


def _with_compute_dtype(model, compute_dtype):
    """`model` itself for float32; for bfloat16 a copy whose layers compute in bfloat16.

    Variables stay float32 (the "mixed_bfloat16" policy); the input layer, the input
    normalisation and the layer named "output" stay float32.
    """
    if compute_dtype == "float32":
        return model
    config = keras.saving.serialize_keras_object(model)
    keep_classes = ("InputLayer", "ImagePreprocessing")

    def mixed(node):
        if isinstance(node, list):
            for value in node:
                mixed(value)
        if not isinstance(node, dict):
            return
        layer_config = node.get("config")
        is_layer = isinstance(layer_config, dict) and not str(node.get("class_name")).startswith(
            "__"
        )
        if is_layer and "dtype" in layer_config:
            keep = node["class_name"] in keep_classes or layer_config.get("name") == "output"
            if not keep and _is_float32_policy(layer_config["dtype"]):
                layer_config["dtype"] = "mixed_bfloat16"
        for value in node.values():
            mixed(value)

    mixed(config)
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _is_float32_policy(value):
    if value == "float32":
        return True
    return (
        isinstance(value, dict)
        and value.get("class_name") == "DTypePolicy"
        and value.get("config", {}).get("name") == "float32"
    )


def export(
    model,
    directory,
    *,
    version=1,
    overwrite=False,
    preprocessing=None,
    threshold=0.5,
    probabilities=False,
    compute_dtype="float32",
    num_classes=None,
    min_size=DEFAULT_MIN_SIZE,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """Write `model` as a TF-Serving SavedModel in `directory/<version>/`.

    Args:
        model: a `keras.Model` that takes images as (B, H, W, C), or a registry name
            (`kerasseg.load(name)` with its default weights).
        directory: the model's base path for TF-Serving (`--model_base_path`); created if
            needed.
        version: a positive integer, the version folder.
        overwrite: replace an existing version folder; by default it is an error.
        preprocessing: the `ImagePreprocessing` mode the model's inputs need. None: what the
            registry entry says for a name, else "none" (models that normalise inside:
            presets, models from `kerasseg train`, classical models). For a model from
            `kerasseg.load("unet", encoder=...)`, pass
            `kerasseg.get_entry("unet").preprocessing_for(arguments)`.
        threshold: class 1 where the probability of a 1-channel (sigmoid) model exceeds it;
            for instance models, the pasted mask probability that makes a mask pixel.
        probabilities: also output the class probabilities (semantic models).
        compute_dtype: "float32" or "bfloat16" (mixed precision; variables stay float32).
        num_classes: the number of labels of a classical model's mask, to store it as uint8
            (<= 256) rather than uint16; by default the registry's count for a name.
        min_size: the smallest accepted image side, in pixels (at least the model's own
            minimum for models that cannot pad).
        max_pixels: the largest accepted image, height x width.

    Returns:
        The `Path` of the version folder.
    """
    if isinstance(model, str):
        entry = registry.get_entry(model)
        if preprocessing is None:
            preprocessing = entry.preprocessing_for()
        if num_classes is None and entry.task == "classical":
            num_classes = entry.num_classes
        model = registry.load(model)
    preprocessing = "none" if preprocessing is None else preprocessing
    if not is_int(version) or version < 1:
        raise ValueError(f"`version` must be a positive integer; got {version!r}.")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"`compute_dtype` must be one of {COMPUTE_DTYPES}; got {compute_dtype!r}.")
    check_int(min_size, "min_size", 1)
    check_int(max_pixels, "max_pixels", 1)
    base = Path(directory)
    target = base / str(int(version))
    if target.exists() and not overwrite:
        taken = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())
        raise FileExistsError(
            f"`version`: {target} already exists (versions there: {taken}); choose a new "
            f"version ({taken[-1] + 1}) or overwrite."
        )
    compute_model = _with_compute_dtype(model, compute_dtype)
    plan = _Plan(
        compute_model,
        preprocessing=preprocessing,
        threshold=threshold,
        probabilities=probabilities,
        num_classes=num_classes,
        min_size=min_size,
        max_pixels=max_pixels,
    )
    _write_archive(
        plan, compute_model, base, target, _metadata(plan, base, preprocessing, compute_dtype)
    )
    return target


def _metadata(plan, base, preprocessing, compute_dtype):
    """What `METADATA_FILE` records beside the SavedModel: with "class_names" and
    "colours" (one per label id) where the model's classes are known
    (`kerasseg.inference.colours.known_palette`: a preset's, a training run's)."""
    palette = known_palette(plan.model)
    fits = plan.instance or (plan.semantic and len(palette or ()) == max(plan.classes, 2))
    classes = (
        {"class_names": list(palette.names), "colours": palette.colours.tolist()}
        if palette is not None and fits
        else {}
    )
    return {
        "model": base.name,
        "task": plan.task,
        "input_channels": plan.channels,
        "preprocessing": preprocessing,
        "threshold": plan.threshold,
        "compute_dtype": compute_dtype,
        "min_size": plan.min_size,
        "max_pixels": plan.max_pixels,
        "outputs": sorted(
            [*plan.outputs, "image_size"] + (["mask_png_bytes"] if "mask" in plan.outputs else [])
        ),
        **classes,
    }


def _write_archive(plan, compute_model, base, target, metadata):
    """Write the SavedModel and its metadata beside `target`, then move it into place."""
    archive = keras.export.ExportArchive()
    archive.track(compute_model)
    if plan.preprocess is not None:
        archive.track(plan.preprocess)
    (serve_bytes, bytes_spec), (serve_tensor, tensor_spec) = _signatures(plan)
    archive.add_endpoint("serving_default", serve_bytes, input_signature=bytes_spec)
    archive.add_endpoint("serve_tensor", serve_tensor, input_signature=tensor_spec)
    base.mkdir(parents=True, exist_ok=True)
    # Write beside the target under a name TF-Serving ignores (not an integer), then move.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=base))
    try:
        archive.write_out(str(staging / "model"), verbose=False)
        (staging / "model" / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        (staging / "model" / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _CallableModule(type(json)):
    """Lets `kerasseg.export(model, ...)` call `export` while `kerasseg.export` stays this module
    (importing a submodule always binds the package attribute to the module)."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
