"""A member's `Snapshot` on disk, without pickle. Plain Python + NumPy.

keras-tuner's own checkpoint keeps only the weights of a trial's best epoch.
PBT needs the optimizer state too (slots and iteration count), so every
segment trial writes its final `Snapshot` (`keras_pbt.snapshot.capture`)
into its trial directory:

* `pbt_checkpoint.npz`: arrays `w0..`, `o0..` (`np.savez`, loaded with
  `allow_pickle=False`);
* `pbt_checkpoint.json`: member, step, hyperparameters, metric, layout and
  a CRC32 of the arrays.

Both are written to temporary names and renamed, the JSON last: a
checkpoint whose JSON exists is complete.
"""

import json
import math
import os

import numpy as np

from keras_pbt.store import Snapshot

ARRAYS = "pbt_checkpoint.npz"
META = "pbt_checkpoint.json"
VERSION = 1


def exists(directory):
    """True if `directory` holds a complete checkpoint."""
    return os.path.exists(os.path.join(directory, META))


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if hasattr(x, "item") and callable(x.item):
        return _json_safe(x.item())
    return x


def save(directory, snapshot):
    """Writes `snapshot` into `directory` (created if needed)."""
    os.makedirs(directory, exist_ok=True)
    arrays = {f"w{i}": np.asarray(a) for i, a in enumerate(snapshot.weights)}
    arrays.update({f"o{i}": np.asarray(a) for i, a in enumerate(snapshot.optimizer)})
    tmp = os.path.join(directory, f".{ARRAYS}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, os.path.join(directory, ARRAYS))
    meta = {
        "version": VERSION,
        "member": snapshot.member,
        "step": int(snapshot.step),
        "hparams": {k: _json_safe(v) for k, v in snapshot.hparams.items()},
        "metric": _json_safe(snapshot.metric),
        "layout": [list(row[:2]) + [list(row[2]), row[3]] for row in snapshot.layout],
        "num_weights": len(snapshot.weights),
        "num_optimizer": len(snapshot.optimizer),
        "checksum": snapshot.checksum(),
    }
    tmp = os.path.join(directory, f".{META}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f)
    os.replace(tmp, os.path.join(directory, META))


def load(directory):
    """Reads the `Snapshot` saved in `directory`.

    Raises:
        FileNotFoundError: if there is no complete checkpoint.
        ValueError: if the arrays do not match the JSON (count or CRC32).
    """
    meta_path = os.path.join(directory, META)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"No keras-pbt checkpoint in {directory!r} (no {META}).")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("version") != VERSION:
        raise ValueError(f"Unsupported checkpoint version {meta.get('version')!r} in {directory!r}.")
    with np.load(os.path.join(directory, ARRAYS), allow_pickle=False) as data:
        weights = tuple(data[f"w{i}"] for i in range(meta["num_weights"]))
        optimizer = tuple(data[f"o{i}"] for i in range(meta["num_optimizer"]))
    metric = meta["metric"]
    if isinstance(metric, str):
        metric = float(metric)
    snap = Snapshot(
        member=meta["member"],
        step=meta["step"],
        weights=weights,
        optimizer=optimizer,
        hparams=meta["hparams"],
        metric=metric,
        layout=tuple((r[0], r[1], tuple(r[2]), r[3]) for r in meta["layout"]),
    )
    if snap.checksum() != meta["checksum"]:
        raise ValueError(f"The checkpoint in {directory!r} is corrupted (CRC32 mismatch).")
    return snap
