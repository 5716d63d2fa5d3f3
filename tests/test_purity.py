"""The pure policy layer imports no TensorFlow or Keras (checked in a fresh interpreter)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Every module of keras_pbt/core/ (found by walking it, so a new one is
# covered), and the pure modules that live beside the glue they serve.
CORE_MODULES = sorted(
    "keras_pbt.core." + p.stem for p in (ROOT / "keras_pbt" / "core").glob("*.py") if p.stem != "__init__"
)
PURE_MODULES = ["keras_pbt", "keras_pbt.core"] + CORE_MODULES + [
    "keras_pbt.storage.store",
    "keras_pbt.storage.checkpoint",
    "keras_pbt.storage.payload",
    "keras_pbt.storage.events",
    "keras_pbt.population.progress",
    "keras_pbt.population.threads",
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
        "('tensorflow', 'keras', 'keras_tuner', 'tensorboard', 'tf_keras', 'jax', 'torch'))\n"
        "print(json.dumps({'heavy': heavy, "
        "'glue': sorted(m for m in ('keras_pbt.runtime.callback', 'keras_pbt.runtime.hyperparameters', "
        "'keras_pbt.storage.summary', 'keras_pbt.runtime.snapshot') if m in sys.modules)}))\n"
    )
    result = _run(code)
    assert len(CORE_MODULES) >= 13 and "keras_pbt.core.ancestry" in CORE_MODULES
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
        "module": "keras_pbt.runtime.callback",
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
    # about seven jobs. Every subpackage counts, and the lineage tab's front
    # end (index.js had grown to 650 lines) with its Python.
    files = [p for p in (ROOT / "keras_pbt").rglob("*.py")]
    files += [p for p in (ROOT / "tensorboard_plugin").rglob("*") if p.suffix in (".py", ".js")]
    lengths = {
        p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in files
    }
    assert "keras_pbt/population/population.py" in lengths and "keras_pbt/tuner/oracle.py" in lengths
    assert "tensorboard_plugin/keras_pbt_tensorboard/static/index.js" in lengths
    assert {name: n for name, n in lengths.items() if n > 500} == {}
