"""Image/mask pairs to batched, augmented, normalised `tf.data` pipelines.

`segmentation_dataset` chains the pieces of `kerasseg.data` in the order the TensorFlow data
performance guide recommends (decode and resize in parallel, cache the decoded tensors,
shuffle, augment with per-element stateless seeds, batch, normalise, prefetch). Elements
are `(images, masks)`: float32 (B, H, W, C) and int32 (B, H, W, 1) class ids, ready for
`model.fit` with a model from `kerasseg.load`.

`augment_instances` applies the same joint augmentation to an image and its instance
targets (the layout of `kerasseg.data.instances`).
"""

import numpy as np
import tensorflow as tf

from kerasseg.data import decode, instances, sources, transforms
from kerasseg.data.augment import JointAugment, seeds_dataset
from kerasseg.ops.checks import check_int, check_ints
from kerasseg.registry import preprocessing_layer

__all__ = ["AUTOTUNE", "augment_instances", "segmentation_dataset"]

AUTOTUNE = tf.data.AUTOTUNE


def _preprocessing_function(preprocessing):
    """None, a registry model name, or a callable on float32 image batches."""
    if preprocessing is None:
        return None
    if isinstance(preprocessing, str):
        return preprocessing_layer(preprocessing)
    if callable(preprocessing):
        return preprocessing
    raise TypeError(
        "`preprocessing` must be None, a model name known to `kerasseg.load` (its registry "
        "entry gives the normalisation), or a callable such as "
        f"`kerasseg.preprocessing_layer(name, **arguments)`; got {type(preprocessing).__name__}."
    )


def _normaliser(preprocessing, channels):
    """The function of `_preprocessing_function`, refused without a channel count."""
    normalise = _preprocessing_function(preprocessing)
    if normalise is not None and channels is None:
        raise ValueError(
            "`preprocessing` normalises per channel, so it needs `channels` (the model's "
            "input channel count, 1 or 3); got channels=None."
        )
    return normalise


def _check_arguments(
    batch_size, image_size, augment, ignore_label, pad_to_multiple, num_classes, cache
):
    """The argument checks of `segmentation_dataset`; returns `image_size` as a tuple."""
    check_int(batch_size, "batch_size", minimum=1)
    if image_size is not None:
        image_size = check_ints(image_size, 2, "image_size", "(height, width) of positive ints")
    if augment is not None and not isinstance(augment, JointAugment):
        raise TypeError(
            f"`augment` must be a kerasseg.data.JointAugment or None; got {type(augment).__name__}."
        )
    check_int(ignore_label, "ignore_label", allow_none=True, type_error=True)
    check_int(pad_to_multiple, "pad_to_multiple", minimum=1, allow_none=True)
    if pad_to_multiple is not None and ignore_label is None:
        raise ValueError(
            "`pad_to_multiple` pads masks with `ignore_label`, so that padding is never "
            "taken for a class; pass `ignore_label`."
        )
    check_int(num_classes, "num_classes", minimum=1, allow_none=True)
    if cache not in (False, True) and not isinstance(cache, str):
        raise TypeError(f"`cache` must be False, True or a file path prefix; got {cache!r}.")
    return image_size


def _decoder(source, channels, image_dtype):
    """A dataset of sources and the function that decodes one of its elements to (image
    float32, mask int32, mask file name)."""
    if isinstance(source, tf.data.Dataset):
        spec = source.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 4):
            raise ValueError(
                "`source` as a tf.data.Dataset must yield (image_bytes, mask_bytes, image_name, "
                f"mask_name) like `kerasseg.data.read_tfrecords`; got elements {spec}."
            )

        def decode_encoded(image_bytes, mask_bytes, image_name, mask_name):
            image, mask = decode.decode_pair(
                image_bytes,
                mask_bytes,
                image_path=image_name,
                mask_path=mask_name,
                channels=channels,
                dtype=image_dtype,
            )
            return image, mask, mask_name

        return source, decode_encoded
    if isinstance(source, (str, bytes)) or not hasattr(source, "__len__"):
        raise TypeError(
            "`source` must be a list of (image_path, mask_path) pairs (see "
            "`kerasseg.data.paired_files`) or a dataset from `kerasseg.data.read_tfrecords`; "
            f"got {type(source).__name__}."
        )
    pairs = sources.file_pairs(*zip(*source, strict=True)) if len(source) else []
    if not pairs:
        raise ValueError("`source` holds no (image_path, mask_path) pairs.")

    def load(image_path, mask_path):
        image, mask = decode.load_pair(image_path, mask_path, channels=channels, dtype=image_dtype)
        return image, mask, mask_path

    return sources.pairs_dataset(pairs), load


def segmentation_dataset(
    source,
    *,
    batch_size=8,
    channels=None,
    image_dtype="uint8",
    class_map=None,
    ignore_label=None,
    num_classes=None,
    image_size=None,
    augment=None,
    preprocessing=None,
    pad_to_multiple=None,
    shuffle=False,
    seed=None,
    cache=False,
    repeat=False,
    drop_remainder=False,
    deterministic=True,
    num_parallel_calls=AUTOTUNE,
):
    """A batched `tf.data.Dataset` of (images, masks) for training or evaluation.

    Args:
        source: a list of (image_path, mask_path) pairs (`paired_files`, `file_pairs`), or
            the dataset of `read_tfrecords`.
        batch_size: images per batch.
        channels: channel count the model takes (1 or 3); files with another count raise.
            None keeps each file's count.
        image_dtype: "uint8" or "uint16", how the image files store values; images come out
            as float32 with the stored values (0..255 or 0..65535) before `preprocessing`.
        class_map: optional {stored value: class id} (e.g. ISBI's {0: 0, 255: 1}); a stored
            value outside it raises at run time unless it equals `ignore_label`.
        ignore_label: the mask value that losses and metrics skip (CamVid: 11). Padding of
            masks uses it, so `pad_to_multiple` and ragged batches need it.
        num_classes: the model's class count (2 for a binary, 1-channel model). When given,
            a mask value (after `class_map`) that is neither a class id 0..num_classes-1
            nor `ignore_label` raises `tf.errors.InvalidArgumentError` naming the file,
            instead of being skipped by the loss.
        image_size: (height, width) to resize every pair to before caching (image bilinear,
            mask nearest).
        augment: a `JointAugment` applied after caching, with a fresh per-element seed each
            epoch drawn from `seed` (stateless ops: the same seed gives the same batches).
        preprocessing: None (values as stored), a registry model name whose entry gives the
            encoder's normalisation, or a callable on float32 image batches such as
            `kerasseg.preprocessing_layer(name, **model_arguments)`.
        pad_to_multiple: pad each pair at the bottom/right to a multiple of this (a model's
            size divisor, 32 for U-Net encoders); the mask padding is `ignore_label`.
        shuffle: shuffle the pairs (files before decoding, or decoded pairs when cached),
            reshuffled each epoch.
        seed: int seed of shuffling and augmentation; None draws one.
        cache: False, True (memory) or a file path prefix: cache decoded, resized pairs.
        repeat: repeat forever (for `fit(steps_per_epoch=...)`).
        drop_remainder: drop the last incomplete batch.
        deterministic: keep element order fixed under parallel maps (False trades order for
            throughput).
        num_parallel_calls: parallelism of the decode and augment maps.

    Returns:
        A `tf.data.Dataset` of (float32 (B, H, W, C) images, int32 (B, H, W, 1) masks).
        Pairs of different sizes are padded per batch with 0 and `ignore_label` when
        `ignore_label` is set; otherwise batching them raises.
    """
    image_size = _check_arguments(
        batch_size, image_size, augment, ignore_label, pad_to_multiple, num_classes, cache
    )
    normalise = _normaliser(preprocessing, channels)
    seed = int(np.random.default_rng().integers(2**31 - 1)) if seed is None else seed
    parallel = {"num_parallel_calls": num_parallel_calls, "deterministic": deterministic}
    dataset, load = _decoder(source, channels, image_dtype)
    prepare = _preparer(load, class_map, ignore_label, num_classes, image_size)
    dataset = _shuffled(dataset, shuffle and not cache, seed).map(prepare, **parallel)
    if cache:
        dataset = _shuffled(dataset.cache("" if cache is True else cache), shuffle, seed)
    dataset = dataset.repeat() if repeat else dataset
    dataset = _augmented(dataset, augment, seed, parallel)
    dataset = _padded(dataset, pad_to_multiple, ignore_label, parallel)
    dataset = _batched(dataset, batch_size, ignore_label, drop_remainder)
    dataset = _normalised(dataset, normalise, parallel)
    return dataset.prefetch(AUTOTUNE).with_options(_options(deterministic))


# The steps of `segmentation_dataset`, in order; each returns `dataset` unchanged when its
# option is off. `parallel` holds the `num_parallel_calls` and `deterministic` of the maps.


def _preparer(load, class_map, ignore_label, num_classes, image_size):
    """The map from a source element to a checked (image, mask): decode, map the classes,
    check the labels, resize."""

    def prepare(*element):
        image, mask, mask_name = load(*element)
        if class_map is not None:
            mask = transforms.remap_classes(mask, class_map, ignore_label=ignore_label)
        if num_classes is not None:
            source = tf.strings.join(["mask ", mask_name])
            mask = transforms.check_labels(mask, num_classes, ignore_label, source=source)
        if image_size is not None:
            image, mask = transforms.resize(image, mask, image_size)
        return image, mask

    return prepare


def _shuffled(dataset, shuffle, seed):
    """Shuffled anew each epoch, in a buffer of the whole dataset (1024 when unknown)."""
    if not shuffle:
        return dataset
    count = int(dataset.cardinality())
    buffer = count if count > 0 else 1024
    return dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def _augmented(dataset, augment, seed, parallel):
    if augment is None:
        return dataset
    return tf.data.Dataset.zip((dataset, seeds_dataset(seed))).map(
        lambda pair, element_seed: augment(pair[0], pair[1], element_seed), **parallel
    )


def _padded(dataset, multiple, ignore_label, parallel):
    if multiple is None:
        return dataset
    return dataset.map(
        lambda image, mask: transforms.pad_to_multiple(
            image, mask, multiple, mask_value=ignore_label
        ),
        **parallel,
    )


def _batched(dataset, batch_size, ignore_label, drop_remainder):
    """Batches; with an ignore label, examples of different sizes are padded per batch."""
    if ignore_label is None:
        return dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.padded_batch(
        batch_size,
        padding_values=(tf.constant(0.0), tf.constant(int(ignore_label), tf.int32)),
        drop_remainder=drop_remainder,
    )


def _normalised(dataset, normalise, parallel):
    if normalise is None:
        return dataset
    return dataset.map(
        lambda images, masks: (tf.cast(normalise(images), tf.float32), masks), **parallel
    )


def _options(deterministic):
    """`tf.data` options that keep (or, False, relax) the element order of every map."""
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return options


def augment_instances(augment, image, targets, seed):
    """Apply `augment` to an image and its instance targets with the same parameters.

    The instance masks travel through the geometric transforms as mask channels; boxes are
    then recomputed from the transformed masks, and instances whose mask became empty (cut
    off by a crop) are removed: the one place instances can disappear.

    Args:
        augment: a `JointAugment`.
        image: float32 (H, W, C).
        targets: dict with "boxes", "class_ids", "masks" (N, H, W) as in
            `kerasseg.data.instances`.
        seed: int (2,) stateless seed.

    Returns:
        (image, targets) transformed.

    Raises:
        ValueError: if `augment` samples outside the image (scale, crop, rotation or elastic
            deformation) with a fill mode other than "constant": "reflect" and "nearest"
            would copy an instance's border pixels into a ghost part of it.
    """
    samples_outside = (
        augment.scale_range is not None
        or augment.crop_size is not None
        or augment.rotation_degrees
        or augment.elastic_alpha
    )
    if samples_outside and augment.fill_mode != "constant":
        raise ValueError(
            "augment_instances: `augment` moves pixels across the image border, so it needs "
            f"fill_mode='constant' (with mask_fill=0) for instance masks; got "
            f"fill_mode={augment.fill_mode!r}."
        )
    channels = instances.masks_to_channels(targets["masks"])
    image, channels = augment(image, channels, seed)
    masks = instances.channels_to_masks(channels)
    moved = dict(targets, masks=masks, boxes=instances.boxes_from_masks(masks))
    return image, instances.drop_empty_instances(moved)
