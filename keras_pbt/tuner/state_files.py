"""The search's JSON state files, written so that a crash never leaves half of one.

keras-tuner writes `oracle.json`, every `trial_*/trial.json` and each
tuner's `<tuner_id>.json` in place (`keras_tuner.utils.save_json`): a
process killed in the middle leaves a short or empty file, and the next run
dies on a bare `JSONDecodeError`. Here every such file is written through
`keras_pbt.storage.checkpoint.atomic_write` (a temporary file, `fsync`,
`os.replace`), so a crash leaves the old file or the new one; and a file that cannot be read anyway (written by another
program, damaged on disk) is refused with a `CheckpointError` naming it.

`PBTOracle` writes `oracle.json` and the trials' files with `write_json`
(`keras_pbt.tuner.oracle_state`), `PBTTuner` its own file
(`TunerStateFiles`); both read every such file with `read_json` before
keras-tuner reloads them.
"""

import json
import os

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.storage.checkpoint import CheckpointError


def write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically (old or new file after a crash).

    Args:
        path: the file.
        obj: a JSON-able object (keras-tuner's states are).

    Returns:
        The JSON text written, as `keras_tuner.utils.save_json` returns it.
    """
    text = json.dumps(obj)
    # The file is fsynced before the rename; the directory is not (one fsync
    # per write, several per segment on the chief): after a power loss the
    # previous state may come back, whole, and the reload repairs it as
    # after a kill.
    checkpoint_lib.atomic_write(path, text.encode("utf-8"), sync_directory=False)
    return text


def read_json(path):
    """Reads a state file written by `write_json` (or by keras-tuner).

    Args:
        path: the file.

    Returns:
        The decoded object.

    Raises:
        CheckpointError: naming `path` when it is empty, cut short or not
            JSON, and saying how to start over.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"The search state file {path} cannot be read ({len(data)} bytes; "
            f"{type(error).__name__}: {error}): it was cut short or damaged, so this project "
            "cannot be resumed from it. Put back a good copy of the file, or pass "
            "overwrite=True or a new project_name to start a new search.", path) from None


class TunerStateFiles:
    """`PBTTuner`'s `save()` and `reload()` (a mixin placed before
    `keras_tuner.Tuner` in its bases): keras-tuner's, with its own
    `<tuner_id>.json` written by `write_json` and read by `read_json`
    first. Worker threads of one process end trials concurrently: one
    writer at a time (`self._save_lock`)."""

    def save(self):
        with self._save_lock:
            if not self._is_worker():
                self.oracle.save()
            write_json(self._get_tuner_fname(), self.get_state())

    def reload(self):
        path = self._get_tuner_fname()
        if os.path.exists(path):
            read_json(path)  # an unreadable file is named, before keras-tuner reads it
        super().reload()
