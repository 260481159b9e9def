"""What every classical layer and model builder shares: a configuration made of the
constructor's arguments, the model around a layer, and the registry entry of a model
without weights."""

import keras

from kerasseg.config import ConfigFromAttributes
from kerasseg.models.base import SegmentationModel
from kerasseg.registry import register_model

__all__ = ["ClassicalLayer", "layer_model", "register_classical"]


class ClassicalLayer(ConfigFromAttributes, keras.layers.Layer):
    """Base of the classical layers: a Keras layer whose `get_config` lists `config_keys`."""


def layer_model(layer, images, output_names=None, name=None):
    """A functional model of one classical layer applied to its "images" input.

    Args:
        layer: the layer.
        images: the model's input (`kerasseg.ops.image.images_input`).
        output_names: the names of the layer's outputs, in order (a dict of outputs), or
            None to keep what the layer returns as the model's output.
        name: the model's name; None: the layer's.

    Returns:
        A `SegmentationModel`.
    """
    outputs = layer(images)
    if output_names is not None:
        if len(output_names) == 1:
            outputs = (outputs,)
        outputs = dict(zip(output_names, outputs, strict=True))
    return SegmentationModel(images, outputs, name=name or layer.name)


def register_classical(name, builder=None, *, description, reference, channels=1, **options):
    """`register_model` for a classical model: no weights, images of `channels` channels.

    Args:
        name: the snake_case name `kerasseg.load` takes.
        builder: the model builder; None to use the result as a decorator.
        description: one line for listings.
        reference: the publication or source the model follows.
        channels: the channels of the default input, (None, None, channels).
        **options: other `register_model` keywords (`num_classes`, `arguments`).

    Returns:
        What `register_model` returns: the entry, or with no `builder`, a decorator.
    """
    return register_model(
        name,
        builder,
        task="classical",
        description=description,
        reference=reference,
        input_channels=channels,
        default_input_shape=(None, None, channels),
        **options,
    )
