"""The model class every kerasseg builder returns: a functional model that checks its input.

Keras converts whatever it is given to the input's dtype and reports a wrong rank or
channel count with a long, unhelpful message. `SegmentationModel` checks the image batch
first and raises an error that names the argument, what was given and what is accepted.

The check runs where the values are known: `__call__` checks eagerly, and `predict`,
`evaluate`, `fit` and the `*_on_batch` methods check their array or tensor input before
Keras traces its step function (a traced step only sees a shape relaxed to
`(None, None, None, C)` after its first call, so a check inside it would miss a wrong size).
A `tf.data.Dataset` is checked on its `element_spec`, and what the spec leaves open (sizes,
NaN) on each batch, by a map with `tf.debugging` assertions that give the same messages
(TensorFlow backend only).
"""

import functools
import inspect

import keras
import numpy as np

from kerasseg.models.input_checks import (
    ACCEPTED_DTYPES,
    CHANNEL_CONVERSIONS,
    FLOAT_DTYPES,
    VALUES_CHECKED,
    assert_finite,
    channel_message,
    check_allow_nan,
    check_spatial_size,
    dtype_name,
    is_dataset,
    is_python_numbers,
    join_message,
    nan_message,
    non_finite,
    rank_advice,
    rank_message,
    shape_tensor_text,
    size_message,
    size_rule_text,
    values_checked,
)
from kerasseg.ops.image import is_symbolic

__all__ = ["SegmentationModel"]


@keras.saving.register_keras_serializable(package="kerasseg")
class SegmentationModel(keras.Model):
    """Functional segmentation model with input validation.

    Built like any functional model, `SegmentationModel(inputs, outputs, name=...)`, plus the
    sizes it accepts: `offset + k * size_divisor`, at least `min_size` (1, 0, 1 = any size).
    Images are checked for rank 4, the channel count of the model's input, a numeric dtype
    and the size rule on every call: eagerly in `__call__`, `predict`, `evaluate`, `fit`
    and the `*_on_batch` methods, on the `element_spec` and each batch of a
    `tf.data.Dataset`, and on the known part of the shape in a traced call. Float images
    that hold NaN or infinity are refused (not in traced calls, which cannot read values)
    unless `predict(..., allow_nan=True)` or `model.allow_nan = True` (for `fit`,
    `evaluate`, `*_on_batch` and direct calls; not saved with the model). `predict` on an
    empty batch returns an empty output. Dict inputs and models with several inputs are
    passed on unchecked.
    """

    def __init__(self, *args, size_divisor=1, size_offset=0, min_size=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.size_divisor = int(size_divisor)
        self.size_offset = int(size_offset)
        self.min_size = int(size_divisor if min_size is None else min_size)
        self.allow_nan = False

    @property
    def allow_nan(self):
        """Whether float images may hold NaN or infinity (default False: refused)."""
        return getattr(self, "_allow_nan", False)

    @allow_nan.setter
    def allow_nan(self, value):
        self._allow_nan = check_allow_nan(value, "allow_nan")

    def __call__(self, *args, **kwargs):
        images = args[0] if args else kwargs.get("inputs")
        images = self._check_images(images)
        if images is not None and not (self.allow_nan or VALUES_CHECKED.get()):
            self._check_values(images)
        if images is not None and tuple(images.shape)[:1] == (0,) and not is_symbolic(images):
            return self._empty_output(images, keras.ops.zeros)  # some kernels fail on batch 0
        return super().__call__(*args, **kwargs)

    # ------------------------------------------------------------------ Keras entry points

    def predict(
        self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, *, allow_nan=None
    ):
        """`keras.Model.predict` after checking `x`; an empty batch gives an empty output.

        Args:
            x: as for `keras.Model.predict`.
            batch_size: as for `keras.Model.predict`.
            verbose: as for `keras.Model.predict`.
            steps: as for `keras.Model.predict`.
            callbacks: as for `keras.Model.predict`.
            allow_nan: accept float images with NaN or infinity (default: `self.allow_nan`).

        Returns:
            The predictions, as `keras.Model.predict` returns them.
        """
        run = functools.partial(
            super().predict,
            batch_size=batch_size,
            verbose=verbose,
            steps=steps,
            callbacks=callbacks,
        )
        return self._checked_predict(run, x, allow_nan)

    def predict_on_batch(self, x, *, allow_nan=None):
        """`keras.Model.predict_on_batch` after checking `x` (see `predict`)."""
        return self._checked_predict(super().predict_on_batch, x, allow_nan)

    def _checked_predict(self, run, x, allow_nan):
        """`run(x)` after checking `x`; an empty batch gives an empty output instead."""
        allow_nan = self.allow_nan if allow_nan is None else check_allow_nan(allow_nan, "allow_nan")
        x = self._checked_input(x, allow_nan)
        empty = self._empty_output(x)
        if empty is not None:
            return empty
        with values_checked():
            return run(x)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit` after checking `x` and `validation_data` (same arguments)."""
        return self._checked_run("fit", args, kwargs)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate` after checking `x` (same arguments)."""
        return self._checked_run("evaluate", args, kwargs)

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch` after checking `x` (same arguments)."""
        return self._checked_run("train_on_batch", args, kwargs)

    def test_on_batch(self, *args, **kwargs):
        """`keras.Model.test_on_batch` after checking `x` (same arguments)."""
        return self._checked_run("test_on_batch", args, kwargs)

    def _checked_run(self, method, args, kwargs):
        run = getattr(super(), method)
        bound = inspect.signature(run).bind(*args, **kwargs)
        arguments = bound.arguments
        # fit's validation calls evaluate on data fit has already checked.
        if not arguments.get("kwargs", {}).get("_use_cached_eval_dataset", False):
            if "x" in arguments:
                arguments["x"] = self._checked_input(arguments["x"], self.allow_nan, method)
            validation = arguments.get("validation_data")
            if isinstance(validation, list | tuple) and validation:
                validation = (self._checked_input(validation[0], self.allow_nan),) + tuple(
                    validation[1:]
                )
                arguments["validation_data"] = validation
            elif validation is not None:
                arguments["validation_data"] = self._checked_input(validation, self.allow_nan)
        with values_checked():
            return run(*bound.args, **bound.kwargs)

    def _checked_input(self, x, allow_nan, method=None):
        """`x` after the checks: arrays and tensors as they are, a dataset mapped through
        per-batch assertions where its spec leaves something to check."""
        if x is None or len(self.inputs) != 1:
            return x
        if is_dataset(x):
            return self._checked_dataset(x, allow_nan)
        images = self._check_images(x)
        if images is None:
            return x
        if not allow_nan:
            self._check_values(images)
        if method is not None and tuple(images.shape)[:1] == (0,):
            raise ValueError(
                f"`x` holds no images (shape {tuple(images.shape)}); `{method}` needs at least one."
            )
        return x

    def _empty_output(self, x, zeros=np.zeros):
        """The (empty) output for an input of 0 images, without running the model; None for
        any other input."""
        if len(self.inputs) != 1 or is_dataset(x):
            return None
        images = self._single_input(x)
        if tuple(getattr(images, "shape", None) or ())[:1] != (0,):
            return None
        spec = self.compute_output_spec(
            keras.KerasTensor(tuple(images.shape), dtype=self.inputs[0].dtype)
        )
        return keras.tree.map_structure(lambda s: zeros(s.shape, s.dtype), spec)

    # ------------------------------------------------------------------ the checks

    def _single_input(self, images):
        """The image batch in `images`, or None for a structure that is passed on unchecked
        (a dict, several arrays, a model with several inputs)."""
        if len(self.inputs) != 1 or images is None or isinstance(images, dict):
            return None
        if isinstance(images, list | tuple):
            if is_python_numbers(images):
                raise TypeError(
                    f"`images` must be an array or tensor of shape (batch, height, width, "
                    f"channels); got a Python {type(images).__name__} of numbers. Convert it "
                    "with `np.asarray(x, 'float32')` (or the dtype the images have)."
                )
            return images[0] if len(images) == 1 else None
        return images

    def _check_images(self, images):
        """Check the rank, channels, dtype and size of an array or tensor (known dims only).

        Returns:
            The image batch (unwrapped from a one-element list), or None for input that is
            not checked here.
        """
        images = self._single_input(images)
        if images is None:
            return None
        kind = type(images).__name__
        if kind in ("RaggedTensor", "SparseTensor"):
            advice = (
                "Resize the images to one size per batch, or pad them with `x.to_tensor()`."
                if kind == "RaggedTensor"
                else "Convert it with `tf.sparse.to_dense(x)`."
            )
            raise TypeError(
                f"`images` must be a dense array or tensor of shape (batch, height, width, "
                f"channels); got a tf.{kind}. {advice}"
            )
        if not (hasattr(images, "shape") and hasattr(images, "dtype")):
            return None  # a generator, a keras.utils.PyDataset, ...: Keras reads it
        shape = images.shape
        if getattr(shape, "rank", 0) is None:  # a traced tf.Tensor of unknown rank
            expected = tuple(self.inputs[0].shape)
            raise ValueError(
                f"`images` must have rank {len(expected)}, (batch, height, width, channels) = "
                f"{expected}; got a traced tensor of unknown rank. Give the tf.function an "
                f"input_signature with that rank, e.g. `tf.TensorSpec({expected})`, or "
                "`tf.ensure_shape` the tensor."
            )
        self._check_spec(tuple(shape), dtype_name(images))
        return images

    def _check_spec(self, shape, dtype, dataset=False):
        """Check a shape (None for unknown dims) and dtype name against the model's input."""
        expected = tuple(self.inputs[0].shape)
        if len(shape) != len(expected):
            advice = rank_advice(expected, len(shape), dataset)
            raise ValueError(
                join_message(rank_message(expected, str(len(shape)), str(shape), advice))
            )
        channels, given = expected[-1], shape[-1]
        if channels is not None and given is not None and given != channels:
            advice = CHANNEL_CONVERSIONS.get((channels, given), "")
            raise ValueError(
                join_message(channel_message(channels, str(shape), str(given), advice))
            )
        wanted = keras.backend.standardize_dtype(self.inputs[0].dtype)
        # the model's own input dtype is accepted too (int8 or bool masks of classical models)
        accepted = ACCEPTED_DTYPES + ((wanted,) if wanted not in ACCEPTED_DTYPES else ())
        if dtype not in accepted:
            raise TypeError(
                f"`images` must have a numeric image dtype, one of {accepted}; got "
                f"{dtype}. Convert explicitly (e.g. `x.astype('float32')`)."
            )
        if "int" in wanted and dtype != wanted:
            raise TypeError(
                f"`images` must be {wanted} for this model, whose thresholds follow that dtype's "
                f"values; got {dtype}. Convert explicitly, or load the model with a matching "
                f"input dtype."
            )
        check_spatial_size(shape[1:3], self.size_divisor, "images", self.size_offset, self.min_size)

    def _check_values(self, images):
        """Refuse an eager float batch with NaN or infinity (traced calls are not checked)."""
        if dtype_name(images) not in FLOAT_DTYPES:
            return
        if not isinstance(images, np.ndarray) and is_symbolic(images):
            return
        found = non_finite(images)
        if found is not None:
            count, first = found
            raise ValueError(join_message(nan_message(str(count), *(str(i) for i in first))))

    # ------------------------------------------------------------------ tf.data

    def _checked_dataset(self, dataset, allow_nan):
        """`dataset` after checking its spec, mapped through per-batch assertions for what
        the spec leaves open (TensorFlow backend; a dict or unknown structure passes)."""
        spec = dataset.element_spec
        paired = isinstance(spec, tuple) and 1 <= len(spec) <= 3  # (x,), (x, y), (x, y, w)
        images = spec[0] if paired else spec
        kind = type(images).__name__
        if kind in ("RaggedTensorSpec", "SparseTensorSpec"):
            raise TypeError(
                f"`images` must be dense tensors of shape (batch, height, width, channels); the "
                f"tf.data.Dataset yields a {kind}. Resize the images to one size per batch, or "
                "pad them (`x.to_tensor()` for ragged ones) in a `dataset.map`."
            )
        if kind != "TensorSpec":
            return dataset
        dtype = dtype_name(images)
        shape = None if images.shape.rank is None else tuple(images.shape)
        if shape is not None:
            self._check_spec(shape, dtype, dataset=True)
        else:
            self._check_spec((None,) * len(self.inputs[0].shape), dtype, dataset=True)
        sized = self.size_divisor > 1 or self.min_size > 1 or self.size_offset != 0
        open_shape = shape is None or shape[-1] is None or (sized and None in shape[1:3])
        open_values = dtype in FLOAT_DTYPES and not allow_nan
        if not (open_shape or open_values) or keras.backend.backend() != "tensorflow":
            return dataset

        def check(*element):
            checked = self._assert_batch(element[0], shape is None, open_values)
            return (checked, *element[1:]) if paired else checked

        import tensorflow as tf  # a tf.data.Dataset on the TensorFlow backend

        return dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _assert_batch(self, images, unknown_rank, values):
        """`images` (one batch, traced in a dataset map) after `tf.debugging` assertions with
        the messages of the eager checks."""
        import tensorflow as tf  # only reached from a tf.data.Dataset, where TensorFlow runs

        expected = tuple(self.inputs[0].shape)
        shape, rank = tf.shape(images, out_type=tf.int64), tf.rank(images)
        text = shape_tensor_text(tf, shape)
        advice = tf.where(
            rank == len(expected) - 1,
            rank_advice(expected, len(expected) - 1, True),
            rank_advice(expected, -1, True),
        )
        rank_parts = rank_message(expected, tf.strings.as_string(rank), text, advice)
        checks = [tf.debugging.Assert(rank == len(expected), [join_message(rank_parts)])]
        with tf.control_dependencies(checks):
            checks = self._assert_shape(tf, shape, text)
        with tf.control_dependencies(checks):
            images = assert_finite(tf, images) if values else tf.identity(images)
        if unknown_rank:
            images = tf.ensure_shape(images, (None,) * (len(expected) - 1) + expected[-1:])
        return images

    def _assert_shape(self, tf, shape, text):
        """Assertions on the channels and spatial size of a batch's `shape` tensor."""
        checks = []
        channels = self.inputs[0].shape[-1]
        if channels is not None:
            given = shape[-1]
            advice = tf.constant("")
            for (wanted, had), line in CHANNEL_CONVERSIONS.items():
                if wanted == channels:
                    advice = tf.where(given == had, line, advice)
            parts = channel_message(channels, text, tf.strings.as_string(given), advice)
            checks.append(tf.debugging.Assert(given == channels, [join_message(parts)]))
        divisor, offset, minimum = self.size_divisor, self.size_offset, self.min_size
        sizes = [shape[1], shape[2]]
        fits = [(s >= minimum) & ((s - offset) % divisor == 0) for s in sizes]
        size = tf.strings.join(
            ["(", tf.strings.as_string(sizes[0]), ", ", tf.strings.as_string(sizes[1]), ")"]
        )
        messages = []
        for s in sizes:
            below = tf.maximum(tf.constant(minimum, tf.int64), s - (s - offset) % divisor)
            single = tf.strings.join(["[", tf.strings.as_string(below), "]"])
            pair = tf.strings.join(
                ["[", tf.strings.as_string(below), ", ", tf.strings.as_string(below + divisor), "]"]
            )
            example = tf.where(below <= s, pair, single)
            rule = size_rule_text(divisor, offset)
            parts = size_message("images", size, rule, minimum, example, tf.strings.as_string(s))
            messages.append(join_message(parts))
        message = tf.where(fits[0], messages[1], messages[0])
        checks.append(tf.debugging.Assert(fits[0] & fits[1], [message]))
        return checks

    # ------------------------------------------------------------------ saving

    def get_config(self):
        config = super().get_config()
        config.update(self._size_rule())
        return config

    def _size_rule(self):
        return {
            "size_divisor": self.size_divisor,
            "size_offset": self.size_offset,
            "min_size": self.min_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        rule = {
            key: config.pop(key)
            for key in ("size_divisor", "size_offset", "min_size")
            if key in config
        }
        model = super().from_config(config, custom_objects=custom_objects)
        model.size_divisor = int(rule.get("size_divisor", 1))
        model.size_offset = int(rule.get("size_offset", 0))
        model.min_size = int(rule.get("min_size", model.size_divisor))
        return model
