"""Per-image instance targets to the batches Mask R-CNN's `model.fit` takes.

    dataset = kerasseg.data.instance_dataset(
        elements, max_instances=300, batch_size=2, shuffle=True, seed=0,
        augment=kerasseg.data.JointAugment(horizontal_flip=True, vertical_flip=True))
    model.fit(dataset, epochs=...)

`elements` is a `tf.data.Dataset` of ``(image, targets)`` pairs: an (H, W, C) image and
its targets ``{"boxes", "class_ids", "masks"}`` in the layout of `kerasseg.data.instances`
(e.g. `kerasseg.datasets.isbi2012_instances`, or `read_coco` mapped to decoded images).
Batches are ``({"images": float32 (B, H, W, 3), "image_sizes": int32 (B, 2)}, {"boxes":
(B, M, 4), "class_ids": (B, M), "masks": (B, M, H, W), "num_instances": (B,)})``: images
of different sizes are zero-padded at the bottom/right to the largest of the batch with
their real sizes in "image_sizes", instances padded to ``max_instances`` rows (an image
with more raises instead of losing any). Grey images are repeated to three channels (Mask
R-CNN takes RGB).
"""

import tensorflow as tf

from kerasseg.data import instances
from kerasseg.data.augment import JointAugment, seeds_dataset
from kerasseg.data.pipeline import AUTOTUNE, augment_instances
from kerasseg.ops.checks import check_int

__all__ = ["instance_dataset"]

_TARGET_KEYS = ("boxes", "class_ids", "masks")


def _rgb(image):
    image = tf.cast(image, tf.float32)
    channels = image.shape[-1]
    if channels == 1:
        return tf.repeat(image, 3, axis=-1)
    if channels != 3:
        raise ValueError(
            f"instance_dataset: images must have 1 (grey) or 3 (RGB) channels; got {channels}."
        )
    return image


def _check_elements(spec):
    if (
        not isinstance(spec, tuple)
        or len(spec) != 2
        or not isinstance(spec[1], dict)
        or not set(_TARGET_KEYS) <= set(spec[1])
    ):
        raise ValueError(
            "instance_dataset: `elements` must yield (image, targets) pairs, targets a dict "
            f"with {list(_TARGET_KEYS)}; got {spec}."
        )
    image, targets = spec
    if image.shape.rank != 3 or image.shape[-1] is None:
        raise ValueError(
            "instance_dataset: images must be (H, W, C) with a known channel count; got "
            f"shape {image.shape}."
        )
    if "is_crowd" in targets:
        raise ValueError(
            "instance_dataset: crowd regions ('is_crowd') are not supported for training; "
            "filter them out of the targets first."
        )


def instance_dataset(
    elements,
    *,
    max_instances,
    batch_size=2,
    augment=None,
    shuffle=False,
    seed=None,
    cache=False,
    drop_remainder=False,
):
    """Batches of (inputs, padded instance targets) for Mask R-CNN.

    Args:
        elements: `tf.data.Dataset` of (image, targets) pairs (see the module docstring).
        max_instances: int >= 1, rows of the padded targets.
        batch_size: images per batch.
        augment: optional `JointAugment` applied to image and masks with the same
            parameters (`augment_instances`: boxes recomputed, emptied instances removed);
            geometric options need ``fill_mode="constant"``.
        shuffle, seed: shuffle the images every epoch; `seed` also seeds the augmentation.
        cache: cache the decoded elements in memory before augmentation.
        drop_remainder: drop a last smaller batch.

    Returns:
        A `tf.data.Dataset` of ``(inputs, targets)`` batches.

    Raises:
        TypeError: `elements` is not a dataset or `augment` not a `JointAugment`.
        ValueError: the elements are not (image, targets) pairs of the module docstring,
            hold crowd regions, or `max_instances` or `batch_size` is not an int >= 1.
    """
    if not isinstance(elements, tf.data.Dataset):
        raise TypeError(
            "instance_dataset: `elements` must be a tf.data.Dataset of (image, targets) pairs; got "
            f"{type(elements).__name__}."
        )
    _check_elements(elements.element_spec)
    check_int(max_instances, "max_instances", minimum=1, context="instance_dataset")
    check_int(batch_size, "batch_size", minimum=1, context="instance_dataset")
    if augment is not None and not isinstance(augment, JointAugment):
        raise TypeError(
            "instance_dataset: `augment` must be a kerasseg.data.JointAugment or None; got "
            f"{type(augment).__name__}."
        )

    def prepare(image, targets):
        return _rgb(image), {key: targets[key] for key in _TARGET_KEYS}

    dataset = elements.map(prepare, num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        dataset = tf.data.Dataset.zip((dataset, seeds_dataset(seed))).map(
            lambda pair, element_seed: augment_instances(augment, *pair, element_seed),
            num_parallel_calls=AUTOTUNE,
        )

    def split(image, targets):
        size = tf.shape(image)[:2]
        padded = instances.to_padded(targets, max_instances)
        padded["masks"] = tf.cast(padded["masks"], tf.uint8)
        return {"images": image, "image_sizes": size}, padded

    dataset = dataset.map(split, num_parallel_calls=AUTOTUNE)
    dataset = dataset.padded_batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(AUTOTUNE)
