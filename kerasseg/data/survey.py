"""What the mask files of a data set hold, and which classes that makes.

Before a model trains on a user's folder of masks, one pass over the files finds every
stored value and its pixel count (`survey_masks`). From that:

* `MaskSurvey.infer_classes` turns the values into classes when nobody said how many there
  are: contiguous ids 0..K-1 give K classes; exactly two values {0, v} give two classes with
  v taken as class 1 (the usual 0/255 binary mask); anything else is refused with the values
  found and the class map that would fix it.
* `MaskSurvey.check_classes` refuses, before any training step, values that a model with an
  explicit class count (or a class map) would not understand, naming files that hold them.

Without this, a loss that skips out-of-range labels inside a compiled step (it cannot raise
there) trains on the remaining pixels and reports perfect scores on nothing.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from kerasseg import files
from kerasseg.data import decode

__all__ = [
    "EXAMPLE_FILES",
    "SHOWN_VALUES",
    "SUGGESTED_MAP_MAX",
    "MaskSurvey",
    "fingerprint",
    "format_class_map",
    "survey_masks",
]

EXAMPLE_FILES = 5  # files named per offending value
SHOWN_VALUES = 10  # values shown in summaries and errors
SUGGESTED_MAP_MAX = 20  # largest value count for which an error spells out a class map


@dataclasses.dataclass
class MaskSurvey:
    """Distinct stored values of a set of mask files.

    Attributes:
        files: number of mask files.
        counts: {value: pixel count} over all files.
        file_counts: {value: number of files holding it}.
        examples: {value: up to `EXAMPLE_FILES` paths of files holding it}.
        fingerprint: hash of the paths, sizes and modification times surveyed.
    """

    files: int
    counts: dict
    file_counts: dict
    examples: dict
    fingerprint: str = ""

    @property
    def values(self):
        """The stored values, sorted."""
        return sorted(self.counts)

    def summary(self):
        """One line: "masks: 16 files, values {0: 81 %, 255: 19 %}"."""
        total = sum(self.counts.values())
        parts = [f"{v}: {_percent(self.counts[v], total)}" for v in self.values[:SHOWN_VALUES]]
        if len(self.counts) > SHOWN_VALUES:
            parts.append(f"... {len(self.counts)} values in all")
        return f"masks: {self.files} files, values {{{', '.join(parts)}}}"

    def infer_classes(self, ignore_label=None):
        """(num_classes, class_map or None, note or None) from the stored values.

        Args:
            ignore_label: a stored value that is not a class (left out of the inference).

        Returns:
            `num_classes` >= 2; `class_map` {stored value: class id} when values must be
            mapped (the binary case {0, v}, v != 1), else None; a one-line `note` saying
            what was decided when it is not plain ids.

        Raises:
            ValueError: the values are not ids 0..K-1 nor a binary pair {0, v}; the message
                lists them and the class map that would fix it.
        """
        values = [v for v in self.values if v != ignore_label]
        if not values:
            raise ValueError(
                f"every pixel of the {self.files} masks is the ignore label {ignore_label}; "
                "there is nothing to learn."
            )
        if values == [0]:
            raise ValueError(
                f"the {self.files} masks hold only the value 0 (one class); there is nothing "
                "to learn. Are the masks empty, or stored in another channel or format?"
            )
        if values == list(range(len(values))):
            return len(values), None, None
        if len(values) == 2 and values[0] == 0:
            foreground = values[1]
            class_map = {0: 0, foreground: 1}
            note = (
                f"masks: binary, value {foreground} taken as class 1 "
                f"(class map {format_class_map(class_map)})"
            )
            return 2, class_map, note
        raise ValueError(
            f"the masks hold the values {_value_list(values)}, which are neither class ids "
            f"0..K-1 nor a binary pair {{0, v}}; {_map_hint(values)}"
        )

    def resolve(self, num_classes=None, class_map=None, ignore_label=None):
        """The classes of these masks: inferred, or checked against what was given.

        `infer_classes` without a class count or map; else `check_classes`, except that a
        binary count (2) with masks {0, v} maps v to 1. This is the one rule `kerasseg
        train` and `kerasseg evaluate` apply to mask folders.

        Args:
            num_classes: the class count, or None.
            class_map: {stored value: class id}, or None.
            ignore_label: the stored value that is not a class, or None.

        Returns:
            (num_classes, class_map, note), as `infer_classes` returns them.

        Raises:
            ValueError: as `infer_classes` or `check_classes`.
        """
        if num_classes is None and class_map is None:
            return self.infer_classes(ignore_label)
        if num_classes is None:
            num_classes = max(v for v in class_map.values() if v != ignore_label) + 1
        values = [v for v in self.values if v != ignore_label]
        if class_map is None and num_classes == 2 and len(values) == 2 and values[0] == 0:
            inferred, class_map, note = self.infer_classes(ignore_label)
            return inferred, class_map, note
        self.check_classes(num_classes, class_map, ignore_label)
        return num_classes, class_map, None

    def check_classes(self, num_classes, class_map=None, ignore_label=None):
        """Refuse stored values that a model of `num_classes` classes would not understand.

        Args:
            num_classes: the class count (2 for a binary, 1-channel sigmoid model).
            class_map: {stored value: class id} applied before training, or None.
            ignore_label: the stored value that losses and metrics skip.

        Raises:
            ValueError: naming the offending values and up to `EXAMPLE_FILES` files each.
        """
        if class_map is not None:
            unmapped = [v for v in self.values if v not in class_map and v != ignore_label]
            if unmapped:
                raise ValueError(
                    f"the masks hold value(s) {_value_list(unmapped)} that the class map "
                    f"{format_class_map(class_map)} does not map{self._where(unmapped)}; add "
                    "them to the class map"
                    + ("" if ignore_label is None else f" or set them to {ignore_label}")
                    + "."
                )
            targets = sorted(set(class_map.values()) - {ignore_label})
            outside = [t for t in targets if not 0 <= t < num_classes]
            if outside:
                raise ValueError(
                    f"the class map {format_class_map(class_map)} sends values to class(es) "
                    f"{outside}, outside the {num_classes} classes 0..{num_classes - 1}."
                )
            return
        outside = [v for v in self.values if not 0 <= v < num_classes and v != ignore_label]
        if outside:
            ignore = "" if ignore_label is None else f" and not the ignore label {ignore_label}"
            raise ValueError(
                f"the masks hold value(s) {_value_list(outside)}, outside the class ids "
                f"0..{num_classes - 1} of a {num_classes}-class model{ignore}"
                f"{self._where(outside)}; {_map_hint(self.values, ignore_label)}"
            )

    def _where(self, values):
        parts = []
        for value in values[:3]:
            names = [Path(p).name for p in self.examples.get(value, [])]
            more = self.file_counts.get(value, 0) - len(names)
            parts.append(
                f"{value} in {', '.join(names)}" + (f" and {more} more file(s)" if more else "")
            )
        return f" ({'; '.join(parts)})" if parts else ""

    def to_json(self):
        """The survey as a JSON-serialisable dict (the inverse of `from_json`)."""
        return {
            "files": self.files,
            "fingerprint": self.fingerprint,
            "values": [
                [v, self.counts[v], self.file_counts[v], self.examples[v]] for v in self.values
            ],
        }

    @classmethod
    def from_json(cls, data):
        """A survey from the dict of `to_json`."""
        rows = data["values"]
        return cls(
            files=int(data["files"]),
            counts={int(v): int(c) for v, c, _, _ in rows},
            file_counts={int(v): int(n) for v, _, n, _ in rows},
            examples={int(v): list(e) for v, _, _, e in rows},
            fingerprint=data.get("fingerprint", ""),
        )


def format_class_map(class_map):
    """{0: 0, 255: 1} -> "0:0,255:1" (the `--class-map` syntax)."""
    return ",".join(f"{k}:{v}" for k, v in sorted(class_map.items()))


def _percent(count, total):
    share = 100.0 * count / max(total, 1)
    return f"{share:.0f} %" if share >= 1 or share == 0 else f"{share:.2g} %"


def _value_list(values):
    values = list(values)
    text = ", ".join(str(v) for v in values[:SHOWN_VALUES])
    if len(values) > SHOWN_VALUES:
        text += f", ... ({len(values)} values in all)"
    return f"{{{text}}}"


def _map_hint(values, ignore_label=None):
    values = [v for v in values if v != ignore_label]
    if len(values) > SUGGESTED_MAP_MAX:
        return (
            f"{len(values)} distinct values are more than a class map can sensibly list: masks "
            "must store one class id per pixel (these look like images or instance labels)."
        )
    suggested = format_class_map({v: i for i, v in enumerate(values)})
    return (
        f"say which value is which class with a class map, e.g. --class-map {suggested} "
        "(class_map={stored value: class id} in Python), or set --num-classes."
    )


def fingerprint(paths):
    """A hash of the paths, sizes and modification times of `paths`."""
    digest = hashlib.sha256()
    for path in paths:
        status = os.stat(path)
        digest.update(f"{os.fspath(path)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _value_counts(path):
    mask = decode.read_mask(path)
    values, _, counts = tf.unique_with_counts(tf.reshape(mask, [-1]))
    return values, counts


def survey_masks(mask_paths, *, cache=None, progress=True):
    """Read every mask file once and count its stored values.

    Args:
        mask_paths: paths of mask files (PNG of 1 to 16 bits, palette PNG, TIFF), or
            (image, mask) pairs as from `kerasseg.data.paired_files`.
        cache: optional JSON path; a survey stored there for the same files (same paths,
            sizes and modification times) is returned without reading them, and a new one
            is stored there.
        progress: show a progress bar (`keras.utils.Progbar`).

    Returns:
        A `MaskSurvey`.

    Raises:
        ValueError: no paths, or a file cannot be decoded (the message names it).
    """
    paths = [os.fspath(p[1] if isinstance(p, tuple | list) else p) for p in mask_paths]
    if not paths:
        raise ValueError("survey_masks: no mask files given.")
    try:
        stamp = fingerprint(paths)
    except OSError as error:
        raise ValueError(f"survey_masks: cannot read {error.filename}: {error.strerror}") from None
    if cache is not None and Path(cache).is_file():
        try:
            stored = MaskSurvey.from_json(json.loads(Path(cache).read_text()))
            if stored.fingerprint == stamp:
                return stored
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable cache is surveyed again and rewritten
    counts, file_counts, examples = {}, {}, {}
    bar = keras.utils.Progbar(len(paths), unit_name="mask") if progress else None
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        _value_counts, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    try:
        for index, (values, value_counts) in enumerate(dataset):
            for value, count in zip(
                values.numpy().tolist(), value_counts.numpy().tolist(), strict=True
            ):
                counts[value] = counts.get(value, 0) + count
                file_counts[value] = file_counts.get(value, 0) + 1
                shown = examples.setdefault(value, [])
                if len(shown) < EXAMPLE_FILES:
                    shown.append(paths[index])
            if bar is not None:
                bar.update(index + 1)
    except tf.errors.OpError as error:
        raise ValueError(decode.error_text(error)) from None
    survey = MaskSurvey(len(paths), counts, file_counts, examples, stamp)
    if cache is not None:
        files.write_json(cache, survey.to_json())
    return survey
