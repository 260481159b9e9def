"""Small building blocks shared by the segmentation architectures."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kerasseg")
class CenterCropLike(layers.Layer):
    """Crop the first input's centre to the spatial size of the second.

    The U-Net paper's "valid" convolutions shrink the decoder's maps, so the encoder's skip
    features are centre-cropped before concatenation (Ronneberger et al. 2015, Fig. 1).
    Works with unknown spatial sizes.
    """

    def call(self, inputs, training=None):
        features, reference = inputs
        height, width = ops.shape(features)[1], ops.shape(features)[2]
        target_h, target_w = ops.shape(reference)[1], ops.shape(reference)[2]
        top = (height - target_h) // 2
        left = (width - target_w) // 2
        return ops.slice(
            features,
            [0, top, left, 0],
            [ops.shape(features)[0], target_h, target_w, ops.shape(features)[3]],
        )

    def compute_output_shape(self, input_shapes):
        features, reference = input_shapes
        return (features[0], reference[1], reference[2], features[3])


def conv_block(x, filters, name, batch_norm=True, padding="same", convs=2):
    """`convs` x (3x3 conv, optional batch norm, ReLU)."""
    for i in range(1, convs + 1):
        x = layers.Conv2D(
            filters,
            3,
            padding=padding,
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


HEAD_ACTIVATIONS = (None, "sigmoid", "softmax")


def segmentation_head(x, num_classes, activation, kernel_size=1):
    """Class logits, plus an optional sigmoid or softmax, in float32 (mixed-precision safe)."""
    x = layers.Conv2D(num_classes, kernel_size, padding="same", name="head")(x)
    return layers.Activation(activation or "linear", dtype="float32", name="output")(x)
