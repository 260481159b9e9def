"""A training run's folder: one process at a time, and a resume only of the same run.

`RunFolder(path)` is a context manager that holds an exclusive lock on `path/.lock` while a
run uses the folder. The lock is an operating-system file lock (through the `filelock`
package), so it is released when its process ends in any way, a kill included: a lock
left by a dead process is stale by construction and is simply taken over. The holder's pid,
host and start time are written beside it (`.lock.json`) so that a second process can say
who holds the folder. Within one process the lock is re-entrant. A folder that the lock
created and that holds no `run.json` when it is released (a run refused before it started)
is removed again.

`check_same_run` compares the configuration of a new call with the `run.json` of an
earlier one, so that a resume with other arguments is refused before anything is written.
"""

import dataclasses
import datetime
import json
import os
import shutil
import socket
from pathlib import Path

import filelock

from kerasseg import files

__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "OWNER_FILE",
    "RESUMABLE_KEYS",
    "RunFolder",
    "RunFolderError",
    "config_differences",
]

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.json"
CONFIG_FILE = "run.json"
# Keys of run.json that may differ between a run and its resume: the epoch total (asking
# for more epochs continues the run), how it was asked for, and the library versions.
RESUMABLE_KEYS = ("epochs", "argv", "command", "versions")


@dataclasses.dataclass
class _Hold:
    """This process's hold on one folder."""

    lock: filelock.FileLock
    created: bool  # the folder did not exist before this hold
    depth: int = 1


_held = {}  # resolved folder -> _Hold


class RunFolderError(ValueError):
    """The folder cannot be used for this run (in use, another run's, not a folder)."""


class RunFolder:
    """Exclusive use of a run folder; see the module docstring.

    Args:
        path: the folder; created (with its parents) when the lock is taken.

    Raises:
        RunFolderError: `path` is a file, or another process holds the folder.
        OSError: the folder cannot be created or written (read-only disk, permissions).
    """

    def __init__(self, path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a folder; choose another folder.")

    def __enter__(self):
        key = str(self.path.resolve())
        if key in _held:
            _held[key].depth += 1
            return self
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunFolderError(f"{self.path} is a file, not a folder.") from None
        except OSError as error:
            raise OSError(f"cannot create the run folder {self.path}: {error.strerror}") from None
        if not os.access(self.path, os.W_OK):  # else the lock would look held by another
            raise OSError(f"the run folder {self.path} is not writable")
        lock = filelock.FileLock(self.path / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RunFolderError(f"{self.path} is in use by {self._owner_text()}") from None
        except OSError as error:
            raise OSError(f"cannot lock the run folder {self.path}: {error}") from None
        _held[key] = _Hold(lock, created)
        try:
            files.write_json(
                self.path / OWNER_FILE,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                },
            )
            files.remove_partial_files(self.path)
        except BaseException:
            self._release(key)
            raise
        return self

    def __exit__(self, *exc_info):
        self._release(str(self.path.resolve()))

    def _release(self, key):
        hold = _held[key]
        hold.depth -= 1
        if hold.depth > 0:
            return
        (self.path / OWNER_FILE).unlink(missing_ok=True)
        hold.lock.release()
        del _held[key]
        if hold.created and not (self.path / CONFIG_FILE).exists():
            # A folder this use created and that holds no run (it was refused before one
            # started) goes again, with what was written on the way (a survey cache).
            shutil.rmtree(self.path, ignore_errors=True)

    def _owner_text(self):
        try:
            owner = json.loads((self.path / OWNER_FILE).read_text())
            return (
                f"pid {owner['pid']} on {owner['host']} (since {owner['since']}); wait for it "
                "to finish or choose another folder."
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (it is starting); wait for it or choose another folder."

    def read_config(self):
        """The `run.json` of an earlier run in this folder, or None.

        Raises:
            RunFolderError: `run.json` is not readable JSON.
        """
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunFolderError(f"{path} is not readable JSON ({error}).") from None

    def check_same_run(self, config, keys=None):
        """Refuse `config` if an earlier run in this folder had other arguments.

        Args:
            config: the configuration of this call, as `run.json` would record it; keys of
                `RESUMABLE_KEYS` may differ from the earlier run's.
            keys: None to compare everything, or the top-level keys to compare (an early
                check on part of the configuration).

        Returns:
            The earlier configuration (None for a new folder).

        Raises:
            RunFolderError: listing up to 8 differing arguments, earlier value first.
        """
        earlier = self.read_config()
        if earlier is None:
            return None
        if keys is not None:
            earlier = {key: earlier.get(key) for key in keys}
            config = {key: config.get(key) for key in keys}
        differences = config_differences(earlier, config)
        if differences:
            shown = "; ".join(differences[:8])
            more = f" (and {len(differences) - 8} more)" if len(differences) > 8 else ""
            raise RunFolderError(
                f"{self.path} holds a run with other arguments, so it cannot be resumed with "
                f"these: {shown}{more}. Use the same arguments (only the epoch count may "
                "grow) or another folder."
            )
        return earlier

    def write_config(self, config):
        """Write `config` as this folder's `run.json` (atomically)."""
        files.write_json(self.path / CONFIG_FILE, config)


def _plain(value):
    """JSON's view of `value` (tuples become lists), as run.json stores it."""
    return json.loads(json.dumps(value, default=str))


_UNSET = object()


def _differences(before, after, prefix):
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            found += _differences(before.get(key, _UNSET), after.get(key, _UNSET), name)
        return found
    if before == after:
        return []
    shown = ["unset" if side is _UNSET else repr(side) for side in (before, after)]
    return [f"{prefix}: {shown[0]} -> {shown[1]}"]


def config_differences(earlier, now):
    """The arguments that differ between two run configurations, `RESUMABLE_KEYS` aside.

    Args:
        earlier: the configuration of the earlier run (`run.json`).
        now: the configuration of this call.

    Returns:
        ["key: earlier -> now", ...]; nested keys are joined with dots
        ("model_arguments.base_filters").
    """
    earlier = {k: v for k, v in _plain(earlier).items() if k not in RESUMABLE_KEYS}
    now = {k: v for k, v in _plain(now).items() if k not in RESUMABLE_KEYS}
    return _differences(earlier, now, "")
