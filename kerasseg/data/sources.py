"""Find (image, mask) file pairs: matched by name in two folders, or given as explicit lists."""

import os
from pathlib import Path

import tensorflow as tf

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "file_pairs", "paired_files", "pairs_dataset"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
_SHOWN = 10


def _names(items, shown=_SHOWN):
    items = sorted(items)
    text = ", ".join(items[:shown])
    if len(items) > shown:
        text += f", ... and {len(items) - shown} more"
    return text


def _suffixes(value, name):
    if isinstance(value, str):
        value = (value,)
    value = tuple(value)
    bad = [s for s in value if not isinstance(s, str) or not s.startswith(".") or len(s) < 2]
    if not value or bad:
        raise ValueError(
            f"{name} must be one or more suffixes starting with '.', like '.png'; got {value!r}"
        )
    return tuple(s.lower() for s in value)


def _folder(path, name):
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{name} {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{name} {str(folder)!r} is not a folder")
    return folder


def _by_stem(files, folder, name):
    """Map stem -> file, refusing two files with the same stem (a.png and a.tif)."""
    stems = {}
    for file in files:
        stems.setdefault(file.stem, []).append(file.name)
    clashes = {stem: names for stem, names in stems.items() if len(names) > 1}
    if clashes:
        shown = "; ".join(f"{' and '.join(sorted(n))}" for _, n in sorted(clashes.items())[:_SHOWN])
        raise ValueError(
            f"{name} {str(folder)!r} has {len(clashes)} name(s) with more than one file, so the "
            f"pairing is ambiguous: {shown}; remove or rename the extra files"
        )
    return {file.stem: file for file in files}


def _listing(folder, suffixes, name):
    files = sorted(f for f in folder.iterdir() if f.is_file())
    kept = [f for f in files if f.suffix.lower() in suffixes]
    if not kept:
        others = [f.name for f in files]
        held = (
            f"it holds {len(others)} other file(s): {_names(others)}" if others else "it is empty"
        )
        raise ValueError(
            f"{name} {str(folder)!r} has no files ending in {', '.join(suffixes)} ({held})"
        )
    return kept


def paired_files(
    images_dir,
    masks_dir,
    *,
    image_suffixes=IMAGE_SUFFIXES,
    mask_suffixes=MASK_SUFFIXES,
    mask_stem_suffix="",
):
    """Pair the images in one folder with the masks in another by file name.

    Args:
        images_dir: str or path of the image folder (not searched recursively).
        masks_dir: str or path of the mask folder (not searched recursively). It may be
            `images_dir` when `mask_stem_suffix` is set; files whose stem ends with it are
            then masks.
        image_suffixes: sequence of str, the image file endings to consider
            (case-insensitive); other files are ignored.
        mask_suffixes: sequence of str, the mask file endings to consider, likewise.
        mask_stem_suffix: str; the mask of `a.jpg` is named `a{mask_stem_suffix}` plus a
            mask suffix, e.g. "_mask".

    Returns:
        list of (image_path, mask_path) str tuples, sorted by image path.

    Raises:
        FileNotFoundError: a folder does not exist.
        NotADirectoryError: a folder is a file.
        ValueError: any image has no mask or any mask no image (both lists are shown), two
            files share a stem, or a folder holds no matching files.
    """
    image_suffixes = _suffixes(image_suffixes, "image_suffixes")
    mask_suffixes = _suffixes(mask_suffixes, "mask_suffixes")
    if not isinstance(mask_stem_suffix, str):
        raise TypeError(f"mask_stem_suffix must be a str; got {mask_stem_suffix!r}")
    images_folder = _folder(images_dir, "images_dir")
    masks_folder = _folder(masks_dir, "masks_dir")
    image_files = _listing(images_folder, image_suffixes, "images_dir")
    mask_files = _listing(masks_folder, mask_suffixes, "masks_dir")
    if images_folder.resolve() == masks_folder.resolve():
        if not mask_stem_suffix:
            raise ValueError(
                f"images_dir and masks_dir are the same folder {str(images_folder)!r}; "
                f"pass mask_stem_suffix (e.g. '_mask') to tell masks from images"
            )
        image_files = [f for f in image_files if not f.stem.endswith(mask_stem_suffix)]
        mask_files = [f for f in mask_files if f.stem.endswith(mask_stem_suffix)]
    images = _by_stem(image_files, images_folder, "images_dir")
    masks = _by_stem(mask_files, masks_folder, "masks_dir")
    wanted = {stem + mask_stem_suffix: stem for stem in images}
    lonely_images = [images[stem].name for key, stem in wanted.items() if key not in masks]
    lonely_masks = [masks[key].name for key in masks if key not in wanted]
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(
                f"{len(lonely_images)} of {len(images)} images in {str(images_folder)!r} have "
                f"no mask named <stem>{mask_stem_suffix}{{{','.join(mask_suffixes)}}} in "
                f"{str(masks_folder)!r}: {_names(lonely_images)}"
            )
        if lonely_masks:
            parts.append(
                f"{len(lonely_masks)} of {len(masks)} masks in {str(masks_folder)!r} have no "
                f"image in {str(images_folder)!r}: {_names(lonely_masks)}"
            )
        raise ValueError("unmatched files: " + "; ".join(parts))
    return sorted((str(images[stem]), str(masks[key])) for key, stem in wanted.items())


def _path_list(paths, name):
    if isinstance(paths, str | bytes | os.PathLike):
        raise TypeError(f"{name} must be a list of paths, not a single path; got {paths!r}")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError(f"{name} is empty; give at least one path")
    return paths


def file_pairs(images, masks):
    """Pair two explicit, equally long lists of image and mask paths (by position).

    Args:
        images: list of image paths.
        masks: list of mask paths.

    Returns:
        list of (image_path, mask_path) str tuples in the order given.

    Raises:
        TypeError: a single path is given instead of a list.
        ValueError: the lists differ in length or are empty.
        FileNotFoundError: any path does not exist (the missing ones are listed).
    """
    images = _path_list(images, "images")
    masks = _path_list(masks, "masks")
    if len(images) != len(masks):
        raise ValueError(
            f"images has {len(images)} paths but masks has {len(masks)}; they pair by position"
        )
    missing = [p for p in images + masks if not tf.io.gfile.exists(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) do not exist: {_names(missing)}")
    return list(zip(images, masks, strict=True))


def pairs_dataset(pairs):
    """A `tf.data.Dataset` of (image_path, mask_path) scalar strings, in the order given."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; give at least one (image_path, mask_path) pair")
    bad = [p for p in pairs if not isinstance(p, tuple | list) or len(p) != 2]
    if bad:
        raise ValueError(f"pairs must hold (image_path, mask_path) tuples; got {bad[0]!r}")
    images = [os.fspath(image) for image, _ in pairs]
    masks = [os.fspath(mask) for _, mask in pairs]
    return tf.data.Dataset.from_tensor_slices((images, masks))
