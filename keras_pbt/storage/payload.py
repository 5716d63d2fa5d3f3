"""A member's `Snapshot`: the immutable copy of its state, and its one payload layout.

Pure Python + NumPy. A `Snapshot` is what a member publishes in the store
and what another member copies (`keras_pbt.runtime.snapshot` captures and
restores it). Every keras-pbt file that holds a member's training
state (a `Population` checkpoint's member file, a `PBTTuner` segment's
snapshot) stores it this way, written by `encode_snapshot` and read by
`decode_snapshot`; `keras_pbt.storage.checkpoint` puts the two parts in one
`.npz` file:

* arrays `w00000, w00001, ...`: the model's weights; `o*`: the optimizer
  variables; `r*`: further arrays the writer adds (a population member's
  random-generator states);
* `meta["snapshot"]`: `member_id`, `step`, `hparams`, `metric` (a NaN or
  infinite metric in the project's one spelling, `"NaN"`), `layout` (the
  rows `keras_pbt.runtime.snapshot.layout` checks a restore against),
  `num_weights`, `num_optimizer` and `num_extra`;
* further snapshots stored beside the main one (`encode_kept`): arrays
  `<tag>.w00000, ...` and `meta["kept"][tag]`, each laid out as above (a
  member file of an Iterated PBT population keeps its initial weights and
  its champions so).

A snapshot whose arrays live on a GPU is copied to the host first
(`Snapshot.to_host()`: a PyTorch CUDA tensor through `.cpu()`), so the
writer never hands a device tensor to NumPy.
"""

import dataclasses
import zlib
from typing import Any, Dict, Tuple

import numpy as np

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.storage.checkpoint import CheckpointError
from keras_pbt.storage.checkpoint import to_json

KEY = "snapshot"
_PREFIXES = ("w", "o", "r")


def _host_copy(array):
    """A read-only NumPy array of `array`'s value (itself if it is one)."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "detach"):  # a PyTorch tensor, maybe on a GPU
        array = array.detach().cpu()
    out = np.array(array)  # a device tensor's `__array__`: copied to host memory
    out.flags.writeable = False
    return out


def _nbytes(array):  # a device tensor's from its shape and dtype, without a copy
    if isinstance(array, np.ndarray):
        return array.nbytes
    nbytes = getattr(array, "nbytes", None)  # JAX and PyTorch tensors have it
    if isinstance(nbytes, int):
        return nbytes
    return int(np.prod(tuple(array.shape), dtype=np.int64)) * int(array.dtype.size)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """An immutable copy of a member's training state at one step.

    Arrays are read-only NumPy arrays, or tensors on the GPU of a member
    that lives there (`keras_pbt.runtime.snapshot.capture`); a checkpoint writes
    `to_host()`.

    Attributes:
        member_id: the member id.
        step: the member's step when the copy was taken.
        weights: the model's weights (`model.weights` order).
        optimizer: the optimizer's variables (`optimizer.variables` order).
        hparams: the hyperparameters at that step.
        metric: the member's metric at that step (if known).
        layout: `(name, shape, dtype)` of every model weight, then of every
            optimizer variable, used to check that a restore matches.
    """

    member_id: Any
    step: int
    weights: Tuple[Any, ...]
    optimizer: Tuple[Any, ...]
    hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)
    metric: Any = None
    layout: Tuple = ()

    def __post_init__(self):
        for a in self.weights + self.optimizer:
            if isinstance(a, np.ndarray):  # device tensors are immutable already
                a.flags.writeable = False

    @property
    def on_device(self):
        """True if some arrays are device tensors rather than NumPy arrays."""
        return not all(isinstance(a, np.ndarray) for a in self.weights + self.optimizer)

    def to_host(self):
        """This snapshot with read-only NumPy arrays (`self` if it has only those)."""
        if not self.on_device:
            return self
        return dataclasses.replace(self, weights=tuple(map(_host_copy, self.weights)),
                                   optimizer=tuple(map(_host_copy, self.optimizer)))

    def checksum(self):
        """CRC32 over all arrays (to detect torn or corrupted copies); device
        tensors are read to the host, so it equals that of `to_host()`."""
        crc = 0
        for a in self.weights + self.optimizer:
            crc = zlib.crc32(np.ascontiguousarray(_host_copy(a)).view(np.uint8), crc)
        return crc

    @property
    def nbytes(self):
        """Bytes of all arrays (where they are: host or device memory)."""
        return sum(_nbytes(a) for a in self.weights + self.optimizer)



def encode_snapshot(snapshot, extra=()):
    """`(arrays, meta)` of `snapshot`, for `keras_pbt.storage.checkpoint.encode_arrays`.

    Args:
        snapshot: a `Snapshot` (host or device arrays).
        extra: further arrays to store with it, in order (read back by
            `decode_snapshot`). Defaults to `()`.

    Returns:
        `(arrays, meta)`: dict name -> NumPy array, and a JSON-able dict
        with the one key `"snapshot"`; a writer adds its own keys to `meta`.

    Example:

    >>> import numpy as np
    >>> snap = Snapshot("a", 3, (np.ones(2),), (np.zeros(1),), {"opt": "NaN"})
    >>> arrays, meta = encode_snapshot(snap)
    >>> sorted(arrays), meta["snapshot"]["hparams"]
    (['o00000', 'w00000'], {'opt': 'NaN'})
    """
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"`snapshot` must be a Snapshot. Received: snapshot={snapshot!r}")
    host = snapshot.to_host()
    extra = tuple(extra)
    arrays = {}
    for prefix, group in zip(_PREFIXES, (host.weights, host.optimizer, extra)):
        arrays.update({f"{prefix}{i:05d}": a for i, a in enumerate(group)})
    meta = {KEY: {
        "member_id": host.member_id,
        "step": int(host.step),
        "hparams": to_json(dict(host.hparams)),
        "metric": lineage_lib.encode(to_json(host.metric)),
        "layout": to_json(host.layout),
        "num_weights": len(host.weights),
        "num_optimizer": len(host.optimizer),
        "num_extra": len(extra),
    }}
    return arrays, meta


def decode_snapshot(arrays, meta, path):
    """Inverse of `encode_snapshot`: `(snapshot, extra)`.

    Only the metric is read as a float: a hyperparameter or a member id
    spelled `"NaN"` stays the string it was.

    Args:
        arrays: dict name -> array, as `keras_pbt.storage.checkpoint.decode_arrays` reads them.
        meta: the metadata read with them.
        path: the file they came from, named in errors.

    Returns:
        `(Snapshot, extra)`: the snapshot with read-only host arrays and
        the tuple of `extra` arrays.

    Raises:
        CheckpointError: naming `path` when the payload is missing or its
            arrays do not match its counts.
    """
    info = meta.get(KEY) if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        raise CheckpointError(f"Checkpoint file {path} holds no {KEY!r} payload.", path)
    names = sorted(k for k in arrays if "." not in k)  # `<tag>.*`: snapshots kept beside
    groups = [tuple(arrays[k] for k in names if k[:1] == p) for p in _PREFIXES]
    for group, key in zip(groups, ("num_weights", "num_optimizer", "num_extra")):
        if len(group) != info.get(key):
            raise CheckpointError(
                f"Checkpoint file {path} holds {len(group)} arrays for `{key}`; its metadata "
                f"says {info.get(key)!r}.", path)
    layout = tuple(tuple(tuple(x) if isinstance(x, list) else x for x in row)
                   for row in info["layout"])
    snap = Snapshot(info["member_id"], int(info["step"]), groups[0], groups[1],
                    hparams=dict(info["hparams"]), metric=lineage_lib.decode_float(info["metric"]),
                    layout=layout)
    return snap, groups[2]


def encode_kept(arrays, meta, kept):
    """Adds the snapshots of `kept` to `(arrays, meta)` of `encode_snapshot`.

    Args:
        arrays: the dict of arrays to add to (changed in place).
        meta: the metadata to add to (changed in place).
        kept: dict tag -> `Snapshot`; a tag is a name without a dot.

    Example:

    >>> import numpy as np
    >>> arrays, meta = encode_snapshot(Snapshot("a", 3, (np.ones(2),), ()))
    >>> encode_kept(arrays, meta, {"initial": Snapshot("a", 0, (np.zeros(2),), ())})
    >>> sorted(arrays), sorted(decode_kept(arrays, meta, "x.npz"))
    (['initial.w00000', 'w00000'], ['initial'])
    """
    for tag, snapshot in kept.items():
        if not isinstance(tag, str) or not tag or "." in tag:
            raise ValueError(f"A kept snapshot's tag must be a name without a dot. Received: "
                             f"tag={tag!r}")
        sub_arrays, sub_meta = encode_snapshot(snapshot)
        arrays.update({f"{tag}.{name}": a for name, a in sub_arrays.items()})
        meta.setdefault("kept", {})[tag] = sub_meta[KEY]


def decode_kept(arrays, meta, path):
    """Inverse of `encode_kept`: dict tag -> `Snapshot` (empty if none was kept).

    Raises:
        CheckpointError: naming `path` when a kept snapshot's arrays do not
            match its metadata.
    """
    kept = meta.get("kept") or {}
    if not isinstance(kept, dict):
        raise CheckpointError(f"Checkpoint file {path} has malformed kept snapshots.", path)
    out = {}
    for tag, info in kept.items():
        prefix = f"{tag}."
        sub = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
        out[tag], _ = decode_snapshot(sub, {KEY: info}, f"{path} ({tag})")
    return out
