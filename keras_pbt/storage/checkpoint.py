"""Population checkpoints on disk: atomic, checksummed, no pickle.

Pure Python + NumPy (the Keras glue in `population.py` captures and
restores the arrays). Layout of a checkpoint directory:

    checkpoint_dir/
      manifest.json              the last complete checkpoint (written last)
      epoch_000004/member_0.npz  one file per member and checkpoint epoch
      epoch_000004/member_1.npz
      ...

Each member writes its own file at its checkpoint epoch, after its PBT
decision at that boundary: its weights and optimizer variables as NumPy
arrays, and a JSON document (stored as a `uint8` array in the same `.npz`)
with its hyperparameters, counters, RNG state, per-epoch history, and its
reports and lineage records. When every member has written epoch `k`, the
manifest is replaced by one naming those files with their SHA-256 and size.
A reader only trusts the manifest, so files of an epoch that never
completed are ignored.

Every write goes to a temporary file in the same directory, is flushed and
`fsync`ed, then renamed over the target with `os.replace` (atomic on POSIX),
and the directory is `fsync`ed: a process killed at any point leaves either
the old manifest or the new one, each naming complete files.

Nothing is unpickled: arrays load with `np.load(allow_pickle=False)` and
must be numeric; everything else is JSON. A file whose checksum differs from
the manifest's, a truncated file, or a file holding pickled data raises
`CheckpointError` naming the file.
"""

import hashlib
import heapq
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile

import numpy as np

from keras_pbt.core import lineage as lineage_lib

FORMAT = "keras_pbt.storage.checkpoint"
# 2: a member's arrays and snapshot metadata in `keras_pbt.storage.payload`'s layout.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
_EPOCH_DIR = re.compile(r"^epoch_(\d{6,})$")
_META_KEY = "meta"


class CheckpointError(ValueError):
    """A checkpoint cannot be written, or cannot be trusted when read.

    Attributes:
        path: the file concerned.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------- low level


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data, sync_directory=True):
    """Writes `data` (bytes) to `path` so that a crash leaves old or new, never a mix.

    The bytes go to a temporary file in the same directory, which is
    flushed, `fsync`ed and renamed over `path` with `os.replace`; then the
    directory is `fsync`ed so the rename itself is durable.

    Args:
        path: the file.
        data: the bytes.
        sync_directory: `fsync` the directory after the rename. Without it
            a power loss right after may bring back the previous file (still
            whole); a killed process never loses the rename. Defaults to
            `True`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_directory:
        _fsync_dir(directory)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def _check_array(name, array, path):
    if array.dtype.hasobject or array.dtype.kind not in "biufc":
        raise CheckpointError(
            f"Checkpoint file {path} holds array {name!r} of dtype {array.dtype}; only "
            "numeric arrays are allowed (no pickled objects).", path)


def encode_arrays(arrays, meta):
    """`.npz` bytes holding `arrays` (dict name -> numeric array) and `meta` (JSON)."""
    if _META_KEY in arrays:
        raise ValueError(f"Array name {_META_KEY!r} is reserved.")
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)  # host arrays: `payload.encode_snapshot` copied device tensors
        _check_array(name, a, "<new checkpoint>")
        out[name] = a
    # Strict JSON: non-finite floats in the project's one spelling ("NaN").
    text = json.dumps(lineage_lib.encode(meta), allow_nan=False)
    out[_META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    return buffer.getvalue()


def decode_arrays(data, path):
    """Inverse of `encode_arrays`: `(arrays, meta)`. Never unpickles anything.

    `meta` is the JSON as written: a NaN or infinite float is the string
    `"NaN"`, `"Infinity"` or `"-Infinity"`, which the reader turns back
    into a float where it expects one (`keras_pbt.core.lineage.decode_float`),
    so a string hyperparameter or member id spelled `"NaN"` stays a string.

    Raises:
        CheckpointError: naming `path` when the bytes are not such a file.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(
                f"Checkpoint file {path} contains pickled data, which keras-pbt never "
                f"loads (allow_pickle=False): {e}", path) from None
        raise CheckpointError(f"Checkpoint file {path} is corrupt: {e}", path) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(
            f"Checkpoint file {path} is corrupt or truncated: {type(e).__name__}: {e}", path
        ) from None
    if _META_KEY not in arrays:
        raise CheckpointError(f"Checkpoint file {path} has no {_META_KEY!r} entry.", path)
    for name, a in arrays.items():
        _check_array(name, a, path)
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"Checkpoint file {path} has malformed metadata: {e}", path) from None
    return arrays, meta


def _manifest_digest(body):
    return sha256(json.dumps(body, sort_keys=True).encode("utf-8"))


def write_manifest(directory, body):
    """Atomically replaces `directory/manifest.json` with `body` and its own checksum."""
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "body": body,
           "sha256": _manifest_digest(body)}
    atomic_write(os.path.join(directory, MANIFEST), json.dumps(doc, indent=1).encode("utf-8"))


def read_manifest(directory):
    """The manifest's body, or None when `directory` has no manifest.

    Raises:
        CheckpointError: naming the manifest when it is malformed, truncated,
            of another format version, or fails its own checksum.
    """
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(
            f"Checkpoint manifest {path} is corrupt or truncated ({e}); it cannot be trusted.",
            path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a keras-pbt checkpoint manifest.", path)
    if doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint manifest {path} has format version {doc.get('version')!r}; this "
            f"keras-pbt reads version {FORMAT_VERSION}.", path)
    body = doc.get("body")
    if not isinstance(body, dict) or doc.get("sha256") != _manifest_digest(body):
        raise CheckpointError(
            f"Checkpoint manifest {path} fails its checksum: it was modified or corrupted.", path)
    return body


def read_file(directory, entry):
    """Reads one member file named by a manifest `entry`, verifying size and SHA-256.

    Returns:
        `(arrays, meta)`.

    Raises:
        CheckpointError: naming the file if it is missing, truncated,
            corrupt, or holds pickled data.
    """
    path = os.path.join(directory, entry["file"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"Checkpoint file {path} cannot be read: {e}", path) from None
    if len(data) != entry["bytes"]:
        raise CheckpointError(
            f"Checkpoint file {path} is truncated or corrupt: {len(data)} bytes, the "
            f"manifest says {entry['bytes']}.", path)
    if sha256(data) != entry["sha256"]:
        raise CheckpointError(
            f"Checkpoint file {path} is corrupt: its SHA-256 differs from the manifest's.", path)
    return decode_arrays(data, path)


# ------------------------------------------------------------ JSON helpers


def to_json(value):
    """Plain JSON-able data; NumPy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def merge_lineage(per_member):
    """Merges each member's lineage records (each in its own order) by time."""
    return list(heapq.merge(*per_member, key=lambda r: r.time))


# ------------------------------------------------------------- checkpointer


def epoch_dir(epoch):
    return f"epoch_{int(epoch):06d}"


class Checkpointer:
    """Writes member files and commits a manifest once an epoch is complete.

    Thread-safe: every member's thread calls `save_member`.

    Args:
        directory: the checkpoint directory (created if missing).
        header: JSON-able dict identifying the population (`member_ids`,
            `space`, `monitor`, `seed`, ...), stored in every manifest.
        keep: complete checkpoints to keep on disk (only the newest is
            named by the manifest). Defaults to `1`.
    """

    def __init__(self, directory, header, keep=1):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"`checkpoint_dir` must be a path. Received: checkpoint_dir={directory!r}")
        directory = os.fspath(directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(
                f"`checkpoint_dir` must be a directory. Received: checkpoint_dir={directory!r} "
                "(a file)")
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.header = dict(header)
        self.population_size = len(header["member_ids"])
        self.keep = keep
        self._lock = threading.Lock()
        self._pending = {}
        body = read_manifest(directory)
        self.committed = None if body is None else body["epoch"]

    def load(self):
        """The last complete checkpoint: `(manifest body, [(arrays, meta)] per member)`.

        Returns None when the directory holds none. Raises `CheckpointError`
        for anything that cannot be trusted.
        """
        body = read_manifest(self.directory)
        if body is None:
            return None
        members = [read_file(self.directory, entry) for entry in body["files"]]
        for (_, meta), entry in zip(members, body["files"]):
            if meta.get("index") != entry["index"] or meta.get("epoch") != body["epoch"]:
                raise CheckpointError(
                    f"Checkpoint file {os.path.join(self.directory, entry['file'])} belongs to "
                    f"member index {meta.get('index')!r} at epoch {meta.get('epoch')!r}, not to "
                    f"index {entry['index']} at epoch {body['epoch']}.", entry["file"])
        self.committed = body["epoch"]
        return body, members

    def clean(self):
        """Removes leftovers of an interrupted run: temporary files and epoch
        directories newer than the committed checkpoint."""
        for root, _, files in os.walk(self.directory):
            for name in files:
                if name.startswith(".tmp-"):
                    try:
                        os.unlink(os.path.join(root, name))
                    except OSError:
                        pass
        for epoch, path in self._epoch_dirs():
            if self.committed is None or epoch > self.committed:
                shutil.rmtree(path, ignore_errors=True)

    def epoch_files(self):
        """Each epoch directory and its number of member files: `[(name, n)]`."""
        return [(os.path.basename(path),
                 sum(1 for f in os.listdir(path) if f.startswith("member_") and f.endswith(".npz")))
                for _, path in self._epoch_dirs()]

    def _epoch_dirs(self):
        out = []
        for name in os.listdir(self.directory):
            match = _EPOCH_DIR.match(name)
            if match and os.path.isdir(os.path.join(self.directory, name)):
                out.append((int(match.group(1)), os.path.join(self.directory, name)))
        return sorted(out)

    def save_member(self, index, epoch, arrays, meta):
        """Writes member `index`'s state at `epoch`; commits the manifest if
        this was the last member of `epoch` to write.

        Returns:
            True if this call committed a new manifest.
        """
        sub = os.path.join(self.directory, epoch_dir(epoch))
        os.makedirs(sub, exist_ok=True)
        meta = dict(meta, index=index, epoch=epoch)
        data = encode_arrays(arrays, meta)
        name = f"member_{index}.npz"
        atomic_write(os.path.join(sub, name), data)
        entry = {"index": index, "member": meta.get("member"),
                 "file": f"{epoch_dir(epoch)}/{name}", "sha256": sha256(data), "bytes": len(data)}
        with self._lock:
            if self.committed is not None and epoch <= self.committed:
                return False
            pending = self._pending.setdefault(epoch, {})
            pending[index] = entry
            if len(pending) < self.population_size:
                return False
            body = dict(self.header, epoch=epoch, time=time.time(),
                        files=[pending[i] for i in sorted(pending)])
            write_manifest(self.directory, body)
            self.committed = epoch
            for e in [e for e in self._pending if e <= epoch]:
                del self._pending[e]
            kept = [e for e, _ in self._epoch_dirs() if e <= epoch][-self.keep:]
            for e, path in self._epoch_dirs():
                if e < epoch and e not in kept:
                    shutil.rmtree(path, ignore_errors=True)
            return True
