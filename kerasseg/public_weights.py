"""Public checkpoints (torchvision, Hugging Face): downloaded once, verified, converted, cached.

A preset built on someone else's checkpoint names it with a `PublicWeights`: where the
original file is published, how to verify it, and the function that converts it to a Keras
`.weights.h5`. `PublicWeights.fetch` returns the converted file, doing at most once each:

1. download the original into the cache (with a progress bar; atomically: a partial or
   corrupt download is deleted and never used), or take the copy a user put there by hand;
2. verify it: a torchvision file name carries the first hex digits of the file's sha256
   (``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``), checked as `torch.hub` does; a Hugging Face
   file comes from a pinned revision and has a known size where one was published. The full
   sha256 is then recorded beside the file and every later use checks it, so a file that
   changes on disk is refused;
3. convert it (no torch needed: `.pth` files go through a restricted unpickler) and record
   the converted file's sha256 and the original's; later loads read the converted file after
   checking both.

The cache, under `kerasseg.weights.home_dir()` (``$KERASSEG_HOME``)::

    originals/<preset>/<file name>          as published (or put there by hand)
    originals/<preset>/<file name>.json     its sha256, size and address
    converted/<preset>.weights.h5           what `kerasseg.load(preset)` loads
    converted/<preset>.weights.h5.json      its sha256 and the original's

Offline use: with ``KERASSEG_OFFLINE=1`` nothing is downloaded; a missing file raises an
error that names the file to put where (the original, converted on first use, or a
converted file from another machine's cache with its record). `kerasseg download NAME`
fills the cache ahead of time; `kerasseg cache list` / `kerasseg cache clear NAME` show and
empty it. Two processes loading the same preset take turns (a `filelock.FileLock` per
preset), so neither reads a half-written file.
"""

import dataclasses
import datetime
import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import filelock

from kerasseg import files
from kerasseg.weights import download, home_dir, sha256_of

__all__ = [
    "OFFLINE_VARIABLE",
    "PublicWeights",
    "cache_entries",
    "clear_cache",
    "converted_dir",
    "originals_dir",
]

OFFLINE_VARIABLE = "KERASSEG_OFFLINE"
_RECORD = ".json"  # the record of a cached file is the file's name with this appended


def originals_dir():
    """Where downloaded originals are kept: ``$KERASSEG_HOME/originals``."""
    return home_dir() / "originals"


def converted_dir():
    """Where converted weights are kept: ``$KERASSEG_HOME/converted``."""
    return home_dir() / "converted"


@dataclasses.dataclass(frozen=True)
class PublicWeights:
    """A public checkpoint a preset loads, converted to Keras on first use.

    Attributes:
        name: the weights' name within the preset ("coco_v1").
        preset: the registry name of the preset; it names the cached files.
        url: where the original file is published (for Hugging Face, at a pinned revision).
        converter: ``converter(original_path, destination)`` writes the preset's
            `.weights.h5` at `destination` from the original file, raising a ValueError when
            the file holds another architecture's weights.
        sha256_prefix: the hex digits of the file's sha256 that its name carries
            (torchvision); "" when none.
        size: the original's size in bytes where published; None when unknown.
        source: who publishes it, in words ("torchvision `MaskRCNN_ResNet50_FPN_Weights.COCO_V1`").
        licence: the licence of the weights.
        dataset: the data set the weights were trained on, its leading word naming it
            ("coco (91 category ids, torchvision's names)").
        split: the split the metrics were measured on.
        metrics: the publisher's figures, quoted (not measured by kerasseg).
        card: the model card's file name in `saved_models/`, or None.
    """

    name: str
    preset: str
    url: str
    converter: Callable = dataclasses.field(repr=False, compare=False)
    sha256_prefix: str = ""
    size: int | None = None
    source: str = ""
    licence: str = ""
    dataset: str = ""
    split: str = ""
    metrics: dict = dataclasses.field(default_factory=dict)
    card: str | None = None

    @property
    def original_name(self):
        """The original file's name, the last part of its address."""
        return Path(urllib.parse.urlparse(self.url).path).name

    @property
    def file_name(self):
        """The converted file's name."""
        return f"{self.preset}.weights.h5"

    @property
    def original_path(self):
        """Where the original is cached (and where a user may put it by hand)."""
        return originals_dir() / self.preset / self.original_name

    @property
    def converted_path(self):
        """Where the converted weights are cached."""
        return converted_dir() / self.file_name

    def as_dict(self):
        """The fields as plain values (the converter left out), with the file names."""
        values = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "converter"
        }
        return {
            **values,
            "metrics": dict(self.metrics),
            "file_name": self.file_name,
            "original_name": self.original_name,
            "public": True,
        }

    def fetch(self, *, progress=True):
        """The converted `.weights.h5`, downloading and converting the original once.

        Args:
            progress: show a progress bar while downloading, and say when converting.

        Returns:
            The path of the converted file in the cache.

        Raises:
            OSError: the file is not cached and cannot be downloaded (offline, no network,
                an error from the server) or the cache is not writable; the message says
                which file to put where.
            ValueError: a file fails its check (a wrong or truncated download is deleted; a
                file put there by hand is left and named) or holds other weights.
        """
        converted = self.converted_path
        if _converted_matches(converted, self.original_path):  # the usual case: no lock
            return converted
        _check_writable(self)
        with filelock.FileLock(str(converted_dir() / f".{self.preset}.lock"), timeout=3600):
            if _converted_matches(converted, self.original_path):  # another process made it
                return converted
            # What a process killed in the middle of a download or conversion left behind.
            files.remove_partial_files(self.original_path.parent)
            files.remove_partial_files(converted_dir())
            original_sha256 = self._original(progress)
            if progress:
                print(f"kerasseg: converting {self.original_name} for {self.preset}")
            try:
                with files.atomic_path(converted) as temporary:
                    self.converter(self.original_path, temporary)
            except ValueError as error:
                raise ValueError(
                    f"weights of {self.preset!r}: {self.original_path} cannot be converted: {error}"
                ) from error
            _write_record(
                converted,
                {
                    "sha256": sha256_of(converted),
                    "size": converted.stat().st_size,
                    "original": self.original_name,
                    "original_sha256": original_sha256,
                },
            )
        return converted

    def _original(self, progress):
        """Verify the cached original (downloading it first when absent); its sha256."""
        path = self.original_path
        if path.is_file():
            return self._verify_original(path)
        if os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0"):
            raise OSError(
                f"{OFFLINE_VARIABLE} is set and {self.preset!r} is not cached. {self.manual()}"
            )

        def verify(received, sha256):
            self._check(received, sha256, f"the file downloaded from {self.url}", "it was deleted")

        try:
            sha256 = download(self.url, path, size=self.size, verify=verify, progress=progress)
        except ValueError as error:
            raise ValueError(f"{error} {self.manual()}") from None
        except OSError as error:
            raise OSError(
                f"weights of {self.preset!r}: could not download {self.url} ({error}). "
                f"{self.manual()}"
            ) from error
        _write_record(path, self._original_record(sha256, path))
        return sha256

    def _verify_original(self, path):
        sha256 = sha256_of(path)
        what = f"the file {path}"
        self._check(path.stat().st_size, sha256, what, "delete it or replace it")
        record = _read_record(path)
        if record is None:
            _write_record(path, self._original_record(sha256, path))
        elif record.get("sha256") != sha256:
            raise ValueError(
                f"weights of {self.preset!r}: {what} has sha256 {sha256}, not the "
                f"{record.get('sha256')} recorded when it was first stored; it changed on "
                f"disk. Delete it (and {_record_path(path).name}) to download it again."
            )
        return sha256

    def _check(self, size, sha256, what, remedy):
        if self.sha256_prefix and not sha256.startswith(self.sha256_prefix):
            raise ValueError(
                f"weights of {self.preset!r}: {what} is corrupted or not the published file: "
                f"its sha256 {sha256} does not start with {self.sha256_prefix!r} as its "
                f"name says; {remedy}."
            )
        if self.size is not None and size != self.size:
            raise ValueError(
                f"weights of {self.preset!r}: {what} is truncated or not the published file "
                f"({size} bytes, {self.size} expected); {remedy}."
            )

    def _original_record(self, sha256, path):
        return {
            "sha256": sha256,
            "size": path.stat().st_size,
            "url": self.url,
            "stored": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    def manual(self):
        """One sentence: which file to put where for offline use."""
        return (
            f"Put the original {self.original_name} (from {self.url}) at {self.original_path}, "
            f"or a converted {self.file_name} with its {self.file_name}{_RECORD} at "
            f"{self.converted_path.parent}, and load again."
        )


def _record_path(path):
    return path.with_name(path.name + _RECORD)


def _read_record(path):
    try:
        record = json.loads(_record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path, record):
    files.write_json(_record_path(path), record)


def _converted_matches(converted, original):
    """True when the converted file and its record agree, and the original (if still
    cached) is the one it was converted from."""
    record = _read_record(converted)
    if record is None or not converted.is_file() or record.get("sha256") != sha256_of(converted):
        return False
    original_record = _read_record(original) if original.is_file() else None
    return original_record is None or original_record.get("sha256") == record.get("original_sha256")


def _check_writable(info):
    for folder in (converted_dir(), originals_dir() / info.preset):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(
                f"weights of {info.preset!r}: cannot create the cache folder {folder} "
                f"({error.strerror}); set KERASSEG_HOME to a writable folder."
            ) from error
        if not os.access(folder, os.W_OK):
            raise OSError(
                f"weights of {info.preset!r}: the cache folder {folder} is not writable; set "
                "KERASSEG_HOME to a writable folder."
            )


def cache_entries():
    """What the cache holds, per preset.

    Returns:
        A list of dicts sorted by preset: "preset", "original" (path or None),
        "original_bytes", "converted" (path or None), "converted_bytes".
    """
    presets = set()
    if originals_dir().is_dir():
        presets |= {p.name for p in originals_dir().iterdir() if p.is_dir()}
    if converted_dir().is_dir():
        presets |= {p.name[: -len(".weights.h5")] for p in converted_dir().glob("*.weights.h5")}
    entries = []
    for preset in sorted(presets):
        originals = [
            p
            for p in sorted((originals_dir() / preset).glob("*"))
            if p.is_file() and not p.name.endswith(_RECORD) and not p.name.startswith(".")
        ]
        converted = converted_dir() / f"{preset}.weights.h5"
        entries.append(
            {
                "preset": preset,
                "original": originals[0] if originals else None,
                "original_bytes": originals[0].stat().st_size if originals else 0,
                "converted": converted if converted.is_file() else None,
                "converted_bytes": converted.stat().st_size if converted.is_file() else 0,
            }
        )
    return entries


def clear_cache(preset):
    """Delete a preset's cached original and converted files with their records.

    Args:
        preset: the preset's name.

    Returns:
        The paths deleted (empty when nothing was cached).

    Raises:
        ValueError: `preset` is not a preset name (lower-case letters, digits, "_").
    """
    if not isinstance(preset, str) or not re.fullmatch(r"[a-z0-9_]+", preset):
        raise ValueError(
            f"`preset` must be a preset name (lower-case letters, digits and '_'); got {preset!r}."
        )
    removed = []
    folder = originals_dir() / preset
    if folder.is_dir():
        removed += sorted(p for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder)
    for path in (converted_dir() / f"{preset}.weights.h5",):
        for file in (path, _record_path(path)):
            if file.is_file():
                file.unlink()
                removed.append(file)
    return removed
