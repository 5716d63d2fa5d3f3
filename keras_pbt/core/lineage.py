"""Lineage records: who copied whom, when, with which hyperparameters.

Pure Python. A record is a versioned dict with named fields; it is the one
format written by the callback, the population and the keras-tuner oracle,
and read by the TensorBoard plugin.

JSON form: `{"version": 1, "member": ..., ...}` (the file format keeps the
key `member` for the attribute `member_id`). Non-finite floats are
written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"` so that the
JSON is standard (browsers reject a bare `NaN`). This module owns that one
spelling: `encode` / `decode_float` for any JSON keras-pbt writes (the
TensorBoard plugin's answers too), `dumps` / `loads` for records.
"""

import dataclasses
import json
import math
from typing import Any, Dict, Optional

LINEAGE_VERSION = 1

# Name shared by the summary writer and the TensorBoard plugin.
PLUGIN_NAME = "pbt_lineage"
# Tag of the plugin's tensor summaries in each member's run.
LINEAGE_TAG = "pbt_lineage"

ACTIONS = ("init", "keep", "exploit", "restart")


@dataclasses.dataclass
class LineageRecord:
    """One decision about one member at one interval boundary.

    Attributes:
        member_id: the member id.
        step: the member's own optimizer-step count at the decision.
        action: `"init"` (first hyperparameters), `"keep"` (no change),
            `"exploit"` (copied `parent` and explored), or `"restart"`
            (a failed member restarted from `parent`).
        hparams: hyperparameters after the decision.
        hparams_before: hyperparameters before the decision.
        metric: the member's monitored metric at the boundary (None for init).
        parent: the member copied, or None.
        parent_step: the parent's step at the copied snapshot, or None.
        parent_metric: the parent's metric at that step, or None.
        ops: name -> operation text (`"* 1.2"`, `"resample"`, ...).
        interval: the boundary index (0 for init).
        monitor: the monitored metric's name.
        mode: `"min"` or `"max"`.
        reason: free text (`"truncation"`, `"burn-in"`, the error of a fault).
        time: wall-clock time (`time.time()`).
        version: the record format version.
    """

    member_id: Any
    step: int
    action: str
    hparams: Dict[str, Any]
    hparams_before: Optional[Dict[str, Any]] = None
    metric: Optional[float] = None
    parent: Any = None
    parent_step: Optional[int] = None
    parent_metric: Optional[float] = None
    ops: Dict[str, str] = dataclasses.field(default_factory=dict)
    interval: int = 0
    monitor: str = ""
    mode: str = ""
    reason: str = ""
    time: float = 0.0
    version: int = LINEAGE_VERSION

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(
                f"`action` must be one of {ACTIONS}. Received: action={self.action!r}"
            )

    def to_dict(self):
        """A plain, JSON-safe dict (non-finite floats become strings)."""
        # `encode` copies every dict and list; `dataclasses.asdict` would
        # deep-copy them once more (10x slower for the plugin's thousands).
        return encode({_JSON_KEYS.get(name, name): getattr(self, name) for name in _FIELD_NAMES})

    @classmethod
    def from_dict(cls, data):
        """Builds a record from `to_dict()` output, checking version and fields.

        Raises:
            ValueError: if the data is not a record of a known version.
        """
        if not isinstance(data, dict):
            raise ValueError(f"A lineage record must be a JSON object. Received: {data!r}")
        version = data.get("version")
        if version != LINEAGE_VERSION:
            raise ValueError(
                f"Unsupported lineage record version {version!r} "
                f"(this keras-pbt reads version {LINEAGE_VERSION})."
            )
        missing = {"member", "step", "action", "hparams"} - set(data)
        if missing:
            raise ValueError(f"Lineage record lacks fields {sorted(missing)}: {data!r}")
        fields = {_FIELD_OF.get(k, k): v for k, v in data.items() if _FIELD_OF.get(k, k) in _FIELD_SET}
        for key in ("metric", "parent_metric"):
            fields[key] = decode_float(fields.get(key))
        _check_types(fields)
        return cls(**fields)

    @property
    def is_exploit(self):
        return self.action in ("exploit", "restart")


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(LineageRecord))
_FIELD_SET = frozenset(_FIELD_NAMES)
# Attribute -> JSON key where they differ (version 1 of the format), and back.
_JSON_KEYS = {"member_id": "member"}
_FIELD_OF = {v: k for k, v in _JSON_KEYS.items()}


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


# Field -> (check, what it must be), for records read from JSON.
_FIELD_TYPES = {
    "member_id": (lambda x: _is_int(x) or isinstance(x, str), "an int or a str"),
    "step": (_is_int, "an int"),
    "hparams": (lambda x: isinstance(x, dict), "an object"),
    "hparams_before": (lambda x: x is None or isinstance(x, dict), "an object or null"),
    "ops": (lambda x: isinstance(x, dict), "an object"),
    "parent_step": (lambda x: x is None or _is_int(x), "an int or null"),
}


def _check_types(fields):
    for name, (check, what) in _FIELD_TYPES.items():
        if name in fields and not check(fields[name]):
            raise ValueError(
                f"Lineage record field `{_JSON_KEYS.get(name, name)}` must be {what}. "
                f"Received: {_JSON_KEYS.get(name, name)}={fields[name]!r}"
            )


# The one JSON spelling of non-finite floats in keras-pbt.
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode(obj):
    """A JSON-safe copy of `obj`: non-finite floats become `"NaN"`,
    `"Infinity"` or `"-Infinity"`; NumPy scalars become Python numbers;
    tuples become lists.

    `json.dumps(encode(obj), allow_nan=False)` is standard JSON.
    """
    kind = type(obj)
    if kind in _PLAIN:
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else _nonfinite(obj)
    if isinstance(obj, dict):
        # Plain values are copied as they are: the plugin encodes thousands.
        return {k: v if type(v) in _PLAIN else encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [v if type(v) in _PLAIN else encode(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _nonfinite(obj)
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return encode(obj.item())
    return obj


_PLAIN = frozenset((str, int, bool, type(None)))


def _nonfinite(x):
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def decode_float(value):
    """Reads back a float field that `encode` wrote (`"NaN"` -> `nan`); other
    values pass through unchanged."""
    if isinstance(value, str) and value in NONFINITE:
        return NONFINITE[value]
    return value


def dumps(records):
    """Serialises a list of records (or dicts) to standard JSON text.

    Returns:
        `'{"version": 1, "records": [...]}'`.
    """
    rows = [r.to_dict() if isinstance(r, LineageRecord) else encode(r) for r in records]
    return json.dumps({"version": LINEAGE_VERSION, "records": rows}, allow_nan=False)


def loads(text):
    """Parses `dumps` output back into `LineageRecord`s.

    This is the one reader of lineage JSON: `read_lineage`, the keras-tuner
    oracle and the TensorBoard plugin all use it.

    Args:
        text: `str` or UTF-8 `bytes`.

    Raises:
        ValueError: on text that is not UTF-8, malformed or truncated JSON,
            an unknown version, or a record with missing or mistyped fields.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"Lineage payload is not UTF-8 text: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"Lineage payload is not valid JSON (truncated?): {e}") from e
    if not isinstance(data, dict) or "version" not in data:
        raise ValueError(
            f"Not a keras-pbt lineage payload of version {LINEAGE_VERSION} "
            f"(no version): {text[:200]!r}"
        )
    if data["version"] != LINEAGE_VERSION:
        raise ValueError(
            f"Unsupported lineage payload version {data['version']!r} "
            f"(this keras-pbt reads version {LINEAGE_VERSION})."
        )
    records = data.get("records", [])
    if not isinstance(records, list):
        raise ValueError(
            f"Malformed lineage payload: `records` must be a list. Received: records={records!r}"
        )
    return [LineageRecord.from_dict(r) for r in records]
