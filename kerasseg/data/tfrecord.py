"""Sharded TFRecords of (image, mask) pairs holding the files' bytes exactly as on disk."""

import os
import re

import tensorflow as tf

from kerasseg.ops.checks import check_int, is_int

__all__ = ["read_tfrecords", "shard_paths", "write_tfrecords"]

_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "image_name": tf.io.FixedLenFeature([], tf.string),
    "mask_name": tf.io.FixedLenFeature([], tf.string),
}
_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _read(path):
    with tf.io.gfile.GFile(path, "rb") as file:
        contents = file.read()
    if not contents.startswith(_MAGICS):
        raise ValueError(f"{path!r} is not a PNG, JPEG or TIFF file (first bytes {contents[:8]!r})")
    return contents


def shard_paths(prefix, num_shards):
    """The file names `write_tfrecords` uses: `{prefix}-00000-of-00004.tfrecord`, ..."""
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def write_tfrecords(pairs, prefix, *, num_shards=4):
    """Write (image, mask) file pairs into `num_shards` TFRecord files, round-robin.

    Args:
        pairs: sequence of (image_path, mask_path), e.g. from
            `kerasseg.data.sources.paired_files`.
        prefix: str, the output path prefix; its folder must exist.
        num_shards: int between 1 and the number of pairs.

    Returns:
        list of str: the written paths. Each record is a `tf.train.Example` with bytes
        features image, mask (the files' bytes, not re-encoded), image_name and mask_name
        (base names).

    Raises:
        TypeError: `num_shards` is not an int.
        ValueError: no pairs, a malformed pair, `num_shards` out of range, or a file that
            is not a PNG, JPEG or TIFF.
        FileNotFoundError: the folder of `prefix` does not exist.
        FileExistsError: shards of an earlier write with another `num_shards` lie beside
            `prefix`.
    """
    pairs = [tuple(os.fspath(p) for p in pair) for pair in pairs]
    if not pairs:
        raise ValueError("pairs is empty; give at least one (image_path, mask_path) pair")
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("pairs must hold (image_path, mask_path) tuples")
    if not is_int(num_shards):
        raise TypeError(f"num_shards must be an int; got {num_shards!r}")
    if not 1 <= num_shards <= len(pairs):
        raise ValueError(
            f"num_shards must be between 1 and the number of pairs ({len(pairs)}); got {num_shards}"
        )
    prefix = os.fspath(prefix)
    folder = os.path.dirname(prefix) or "."
    if not tf.io.gfile.isdir(folder):
        raise FileNotFoundError(f"the folder of prefix {prefix!r} ({folder!r}) does not exist")
    paths = shard_paths(prefix, num_shards)
    shard_name = re.compile(re.escape(os.path.basename(prefix)) + r"-\d{5}-of-\d{5}\.tfrecord")
    stale = [
        p
        for p in tf.io.gfile.glob(f"{prefix}-*-of-*.tfrecord")
        if shard_name.fullmatch(os.path.basename(p)) and p not in paths
    ]
    if stale:
        raise FileExistsError(
            f"{len(stale)} shard(s) from an earlier write with another num_shards exist beside "
            f"prefix {prefix!r} (e.g. {sorted(stale)[0]!r}); a pattern would mix them in. "
            f"Delete them or choose another prefix"
        )
    for shard, path in enumerate(paths):
        with tf.io.TFRecordWriter(path) as writer:
            for image_path, mask_path in pairs[shard::num_shards]:
                features = {
                    "image": _bytes_feature(_read(image_path)),
                    "mask": _bytes_feature(_read(mask_path)),
                    "image_name": _bytes_feature(os.path.basename(image_path).encode()),
                    "mask_name": _bytes_feature(os.path.basename(mask_path).encode()),
                }
                example = tf.train.Example(features=tf.train.Features(feature=features))
                writer.write(example.SerializeToString())
    return paths


def _parse(record):
    example = tf.io.parse_single_example(record, _FEATURES)
    return example["image"], example["mask"], example["image_name"], example["mask_name"]


def read_tfrecords(pattern, *, shuffle_files=False, seed=None, cycle_length=4, deterministic=True):
    """Read records written by `write_tfrecords`.

    Args:
        pattern: str, the glob pattern of the shard files, e.g. "out/train-*.tfrecord".
        shuffle_files: bool, shuffle the order of the shard files (records within a shard
            keep their order).
        seed: optional int, the seed of the file shuffle.
        cycle_length: int, how many shards are read at once, interleaved.
        deterministic: bool; False lets parallel reads return records out of order
            (faster).

    Returns:
        `tf.data.Dataset` of (image_bytes, mask_bytes, image_name, mask_name) scalar
        strings; decode them with `kerasseg.data.decode.decode_image` / `decode_mask`.

    Raises:
        TypeError: `pattern` is not a str.
        ValueError: `cycle_length` is not an integer >= 1.
        FileNotFoundError: no file matches `pattern`.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str glob pattern; got {pattern!r}")
    check_int(cycle_length, "cycle_length", minimum=1)
    if not tf.io.gfile.glob(pattern):
        raise FileNotFoundError(f"no files match pattern {pattern!r}")
    files = tf.data.Dataset.list_files(pattern, shuffle=shuffle_files, seed=seed)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle_length,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return records.map(_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
