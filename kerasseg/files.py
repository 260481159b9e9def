"""Files a user keeps, written so that a kill at any moment leaves the previous version.

Every writer here writes to a temporary file in the destination's folder, flushes it to
disk, and renames it over the destination (`os.replace`, atomic on POSIX and Windows within
one file system), then flushes the folder entry. A process killed before the rename leaves
the old file as it was, plus a temporary file named `.NAME.partial-PID-RANDOM` that
`remove_partial_files` clears.

Keras decides the format from the file ending, so temporary names keep it
(`.best.partial-123-ab12.keras`).
"""

import contextlib
import json
import os
import secrets
import sys
import time
from pathlib import Path

__all__ = [
    "PARTIAL_MARK",
    "PAUSE_VARIABLE",
    "atomic_path",
    "remove_partial_files",
    "save_model",
    "save_weights",
    "write_json",
    "write_text",
]

PARTIAL_MARK = ".partial-"
# Test hook: "SECONDS" or "ENDING:SECONDS" (e.g. ".keras:5") makes every write (or those of
# files whose names end so) sleep after its temporary file is complete and before the
# rename, announced on stderr, so that a test can kill the process inside a save.
PAUSE_VARIABLE = "KERASSEG_TEST_PAUSE_BEFORE_RENAME"

_ENDINGS = (".weights.h5", ".keras", ".json", ".csv", ".png", ".md", ".h5")


def _split_ending(name):
    for ending in _ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)], ending
    return name, ""


def _fsync_folder(folder):
    if os.name != "posix":
        return  # Windows cannot open a folder for fsync; the rename is still atomic
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _pause_for_tests(path):
    setting = os.environ.get(PAUSE_VARIABLE)
    if not setting:
        return
    ending, _, delay = setting.rpartition(":")
    if path.name.endswith(ending):
        print(f"kerasseg: about to replace {path}", file=sys.stderr, flush=True)
        time.sleep(float(delay))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    The body writes the whole file to the yielded path (any writer that takes a path:
    `model.save`, `h5py.File`, `Image.save`). If the body raises, the temporary file is
    removed and `path` is untouched.

    Example:
        >>> with atomic_path("run/best.keras") as temporary:
        ...     model.save(temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, ending = _split_ending(path.name)
    temporary = path.with_name(f".{stem}{PARTIAL_MARK}{os.getpid()}-{secrets.token_hex(3)}{ending}")
    try:
        yield temporary
        if not temporary.is_file():
            raise OSError(f"nothing was written to {temporary} for {path}")
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        _pause_for_tests(path)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, value):
    """Write `value` as indented JSON to `path` atomically (NaN and infinity refused)."""
    return write_text(path, json.dumps(value, indent=2, allow_nan=False, default=str) + "\n")


def save_model(model, path):
    """`model.save(path)` (a `.keras` archive), atomically."""
    with atomic_path(path) as temporary:
        model.save(temporary)
    return Path(path)


def save_weights(model, path):
    """`model.save_weights(path)` (a `.weights.h5` file), atomically."""
    with atomic_path(path) as temporary:
        model.save_weights(temporary)
    return Path(path)


def remove_partial_files(folder):
    """Delete the temporary files that killed writers left in `folder` and its subfolders.

    Returns:
        The paths of the deleted files relative to `folder`, sorted ([] when `folder` is
        not a folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for file in folder.rglob(f".*{PARTIAL_MARK}*"):
        if file.is_file():
            file.unlink(missing_ok=True)
            removed.append(str(file.relative_to(folder)))
    return sorted(removed)
