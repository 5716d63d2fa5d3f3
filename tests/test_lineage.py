"""Lineage records: versioned dicts, standard JSON, non-finite metrics."""

import json
import math

import numpy as np
import pytest

from keras_pbt.core import lineage
from keras_pbt.core.lineage import LINEAGE_VERSION
from keras_pbt.core.lineage import LineageRecord


def _no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def strict_json(text):
    """Parses JSON that a browser accepts: no bare NaN / Infinity."""
    return json.loads(text, parse_constant=_no_constants)


def exploit(**kw):
    fields = dict(
        member_id=3, step=200, action="exploit", hparams={"lr": 0.012, "units": 64},
        hparams_before={"lr": 0.1, "units": 32}, metric=0.41, parent=1, parent_step=195,
        parent_metric=0.93, ops={"lr": "* 1.2", "units": "shift right"}, interval=2,
        monitor="val_accuracy", mode="max", reason="truncation", time=1700000000.5,
    )
    fields.update(kw)
    return LineageRecord(**fields)


def same(a, b):
    da, db = vars(a), vars(b)
    assert da.keys() == db.keys()
    for k in da:
        x, y = da[k], db[k]
        if isinstance(x, float) and math.isnan(x):
            assert isinstance(y, float) and math.isnan(y), k
        else:
            assert x == y and type(x) is type(y), (k, x, y)


def test_defaults_and_is_exploit():
    r = LineageRecord(member_id=0, step=0, action="init", hparams={"lr": 0.1})
    assert r.version == LINEAGE_VERSION == 1
    assert r.hparams_before is None and r.metric is None and r.parent is None and r.ops == {}
    assert not r.is_exploit
    assert exploit().is_exploit and exploit(action="restart").is_exploit
    assert not exploit(action="keep").is_exploit


def test_bad_action():
    with pytest.raises(ValueError, match=r"`action` must be one of.*action='copy'"):
        LineageRecord(member_id=0, step=0, action="copy", hparams={})


def test_round_trip_dict_and_json():
    r = exploit()
    d = r.to_dict()
    assert d["version"] == 1 and d["member"] == 3 and d["ops"] == r.ops
    same(LineageRecord.from_dict(d), r)
    assert LineageRecord.from_dict(d) == r
    text = lineage.dumps([r, exploit(member_id="b", action="keep", parent=None)])
    payload = strict_json(text)
    assert payload["version"] == 1 and len(payload["records"]) == 2
    back = lineage.loads(text)
    assert back == [r, exploit(member_id="b", action="keep", parent=None)]
    assert lineage.loads(text.encode("utf-8")) == back


@pytest.mark.parametrize("bad", [float("nan"), math.inf, -math.inf, np.float32("nan"),
                                 np.float64("-inf")])
def test_non_finite_metrics_round_trip_as_standard_json(bad):
    r = exploit(metric=bad, parent_metric=bad)
    d = r.to_dict()
    assert d["metric"] in ("NaN", "Infinity", "-Infinity")
    text = lineage.dumps([r])
    strict_json(text)  # no bare NaN / Infinity
    (back,) = lineage.loads(text)
    for got in (back.metric, back.parent_metric):
        assert type(got) is float
        if math.isnan(bad):
            assert math.isnan(got)
        else:
            assert got == float(bad)


def test_numpy_values_are_converted():
    r = exploit(
        step=np.int64(7), metric=np.float32(0.5),
        hparams={"lr": np.float32(0.25), "units": np.int64(64), "flags": (np.bool_(True), 1)},
    )
    text = lineage.dumps([r])
    d = strict_json(text)["records"][0]
    assert d["step"] == 7 and d["metric"] == 0.5
    assert d["hparams"] == {"lr": 0.25, "units": 64, "flags": [True, 1]}
    assert type(lineage.loads(text)[0].hparams["units"]) is int


def test_dumps_accepts_dicts_and_empty():
    assert lineage.loads(lineage.dumps([])) == []
    r = exploit(metric=math.nan)
    raw = vars(r).copy()
    raw["member"] = raw.pop("member_id")  # the JSON key of the attribute `member_id`
    text = lineage.dumps([raw])
    strict_json(text)
    same(lineage.loads(text)[0], r)


def test_from_dict_errors():
    good = exploit().to_dict()
    for version in (None, 0, 2, "1"):
        d = dict(good, version=version)
        with pytest.raises(ValueError, match=rf"Unsupported lineage record version {version!r}"):
            LineageRecord.from_dict(d)
    no_version = {k: v for k, v in good.items() if k != "version"}
    with pytest.raises(ValueError, match="version None"):
        LineageRecord.from_dict(no_version)
    for field in ("member", "step", "action", "hparams"):
        d = {k: v for k, v in good.items() if k != field}
        with pytest.raises(ValueError, match=rf"lacks fields \['{field}'\]"):
            LineageRecord.from_dict(d)
    with pytest.raises(ValueError, match="action"):
        LineageRecord.from_dict(dict(good, action="mutate"))
    for bad in ([good], "x", None):
        with pytest.raises(ValueError, match="must be a JSON object"):
            LineageRecord.from_dict(bad)


def test_from_dict_ignores_unknown_fields_and_fills_defaults():
    d = {"version": 1, "member": 0, "step": 5, "action": "init", "hparams": {"lr": 0.1},
         "added_in_a_later_minor": 42}
    r = LineageRecord.from_dict(d)
    assert r == LineageRecord(member_id=0, step=5, action="init", hparams={"lr": 0.1})


def test_loads_errors():
    with pytest.raises(ValueError):
        lineage.loads("{not json")
    with pytest.raises(ValueError, match="version 1"):
        lineage.loads(json.dumps({"version": 2, "records": []}))
    with pytest.raises(ValueError, match="version 1"):
        lineage.loads(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="version 2"):
        lineage.loads(json.dumps({"version": 1, "records": [dict(exploit().to_dict(), version=2)]}))


def test_dumps_never_writes_bare_nan_even_for_odd_fields():
    r = exploit(time=math.inf, hparams={"lr": math.nan})
    strict_json(lineage.dumps([r]))


def test_plugin_constants():
    assert lineage.PLUGIN_NAME == "pbt_lineage" and lineage.LINEAGE_TAG
    assert set(lineage.ACTIONS) == {"init", "keep", "exploit", "restart"}


@pytest.mark.parametrize("field, value", [
    ("step", "x"), ("step", 1.5), ("step", True), ("member", None), ("member", [1]),
    ("member", False), ("hparams", "<b>lr</b>"), ("hparams_before", [1]), ("ops", None),
    ("parent_step", "3"),
])
def test_from_dict_rejects_mistyped_fields_by_name(field, value):
    d = dict(exploit().to_dict(), **{field: value})
    with pytest.raises(ValueError, match=rf"`{field}` must be .* Received: {field}="):
        LineageRecord.from_dict(d)
    with pytest.raises(ValueError, match=rf"Received: {field}="):
        lineage.loads(json.dumps({"version": 1, "records": [d]}))


def test_loads_names_what_is_wrong_with_a_payload():
    with pytest.raises(ValueError, match="not UTF-8"):
        lineage.loads(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"not valid JSON \(truncated\?\)"):
        lineage.loads(lineage.dumps([exploit()])[:-9])
    with pytest.raises(ValueError, match="`records` must be a list. Received: records=5"):
        lineage.loads('{"version": 1, "records": 5}')
    with pytest.raises(ValueError, match="no version"):
        lineage.loads('{"records": []}')


def test_one_spelling_of_non_finite_floats():
    assert lineage.NONFINITE.keys() == {"NaN", "Infinity", "-Infinity"}
    data = {"m": [math.nan, math.inf, -math.inf, 0.5, np.float32(1.5)], "t": (1, "NaN")}
    encoded = lineage.encode(data)
    assert encoded == {"m": ["NaN", "Infinity", "-Infinity", 0.5, 1.5], "t": [1, "NaN"]}
    strict_json(json.dumps(encoded, allow_nan=False))
    assert [lineage.decode_float(v) for v in encoded["m"][1:]] == [math.inf, -math.inf, 0.5, 1.5]
    assert math.isnan(lineage.decode_float("NaN"))
    assert lineage.decode_float(None) is None and lineage.decode_float("sgd") == "sgd"
