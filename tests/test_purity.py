"""The pure policy layer imports no TensorFlow or Keras (checked in a fresh interpreter)."""

import json
import subprocess
import sys

PURE_MODULES = [
    "keras_pbt",
    "keras_pbt.space",
    "keras_pbt.explore",
    "keras_pbt.selection",
    "keras_pbt.policy",
    "keras_pbt.policy_config",
    "keras_pbt.lineage",
    "keras_pbt.store",
    "keras_pbt.checkpoint",
    "keras_pbt.progress",
    "keras_pbt.schedule",
    "keras_pbt.validation",
    "keras_pbt.ranking",
    "keras_pbt.fire",
    "keras_pbt.pb2",
    "keras_pbt.stats",
    "keras_pbt.threads",
    "keras_pbt.errors",
]


def _run(code):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pure_modules_import_no_tensorflow_or_keras():
    code = (
        "import json, sys\n"
        f"import {', '.join(PURE_MODULES)}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'keras_tuner', 'tensorboard', 'tf_keras'))\n"
        "print(json.dumps({'heavy': heavy, "
        "'glue': sorted(m for m in ('keras_pbt.callback', 'keras_pbt.hyperparameters', "
        "'keras_pbt.summary', 'keras_pbt.snapshot') if m in sys.modules)}))\n"
    )
    result = _run(code)
    assert result["heavy"] == []
    assert result["glue"] == []


def test_public_pure_names_do_not_import_tensorflow():
    code = (
        "import json, sys, keras_pbt\n"
        "names = [n for n in keras_pbt.__all__ if n not in keras_pbt._LAZY]\n"
        "for n in names: getattr(keras_pbt, n)\n"
        "print(json.dumps({'tf': 'tensorflow' in sys.modules, "
        "'keras': 'keras' in sys.modules, 'n': len(names)}))\n"
    )
    result = _run(code)
    assert result == {"tf": False, "keras": False, "n": result["n"]}
    assert result["n"] >= 10


def test_lazy_callback_import_loads_keras():
    code = (
        "import json, sys, keras_pbt\n"
        "before = 'keras' in sys.modules\n"
        "cb = keras_pbt.PBTCallback\n"
        "print(json.dumps({'before': before, 'after': 'keras' in sys.modules, "
        "'name': cb.__name__, 'module': cb.__module__, "
        "'in_dir': 'PBTCallback' in dir(keras_pbt)}))\n"
    )
    result = _run(code)
    assert result == {
        "before": False,
        "after": True,
        "name": "PBTCallback",
        "module": "keras_pbt.callback",
        "in_dir": True,
    }


def test_unknown_attribute_raises_attribute_error():
    import keras_pbt

    try:
        keras_pbt.NoSuchThing
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_no_module_of_the_library_is_over_500_lines():
    # The layout rule (issue 13): population.py had grown to 910 lines with
    # about seven jobs. keras_pbt/tuner/ is checked by its own split.
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "keras_pbt"
    lengths = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in root.glob("*.py")}
    assert "population.py" in lengths and "data.py" in lengths
    assert {name: n for name, n in lengths.items() if n > 500} == {}
