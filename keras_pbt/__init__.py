"""keras-pbt: Population-Based Training for Keras 3 on TensorFlow, JAX and PyTorch.

The pure policy (search space, selection, explore, lineage, stores) imports
no TensorFlow or Keras; the Keras glue (`PBTCallback`, `HyperparameterApplier`,
`ScaledSchedule`, summaries) is imported on first use, so
`import keras_pbt.core.lineage` stays light (the TensorBoard plugin uses it).
On JAX and PyTorch nothing imports TensorFlow (`pip install keras-pbt`
installs none; `pip install keras-pbt[tensorflow]` adds it).
"""

import importlib
import os

from keras_pbt.storage.checkpoint import CheckpointError
from keras_pbt.core.explore import Explorer
from keras_pbt.core.final import FinalChoice
from keras_pbt.core.fire import FireSelection
from keras_pbt.core.lineage import LineageRecord
from keras_pbt.core.lines import KeepLines
from keras_pbt.core.noise import FixedMargin
from keras_pbt.core.noise import Margin
from keras_pbt.core.noise import StandardError
from keras_pbt.core.policy import Decision
from keras_pbt.core.pb2 import PB2Explorer
from keras_pbt.core.policy import BoundaryPlan
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.config import Interval
from keras_pbt.core.config import Iterated
from keras_pbt.core.config import Policy
from keras_pbt.core.ranking import ImprovementRate
from keras_pbt.core.ranking import LastValue
from keras_pbt.core.ranking import MovingAverage
from keras_pbt.core.ranking import Ranking
from keras_pbt.core.ancestry import AncestryEntry
from keras_pbt.core.ancestry import ancestry
from keras_pbt.core.ancestry import ancestry_schedule
from keras_pbt.storage.events import read_lineage
from keras_pbt.core.selection import Report
from keras_pbt.core.selection import Selection
from keras_pbt.core.selection import TTestSelection
from keras_pbt.core.selection import TournamentSelection
from keras_pbt.core.selection import TruncationSelection
from keras_pbt.core.space import Choice
from keras_pbt.core.space import Hyperparameter
from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import LogUniform
from keras_pbt.core.space import Uniform
from keras_pbt.core.space import sample_space
from keras_pbt.core.wide_start import WideStart
from keras_pbt.storage.store import BarrierTimeoutError
from keras_pbt.storage.store import ConfigurationError
from keras_pbt.storage.store import InMemoryStore
from keras_pbt.storage.store import PopulationStopped
from keras_pbt.storage.store import PopulationStore
from keras_pbt.storage.payload import Snapshot

__version__ = "0.1.0"

# Public names that need TensorFlow/Keras, imported lazily (PEP 562).
_LAZY = {
    "PBTCallback": "keras_pbt.runtime.callback",
    "ScheduleCallback": "keras_pbt.runtime.replay",
    "replay": "keras_pbt.runtime.replay",
    "HyperparameterApplier": "keras_pbt.runtime.hyperparameters",
    "ScaledSchedule": "keras_pbt.runtime.hyperparameters",
    "MemberSummaryWriter": "keras_pbt.storage.summary",
    "Population": "keras_pbt.population.population",
    "PopulationError": "keras_pbt.population.population",
    "NonFiniteStateError": "keras_pbt.population.population",
    "Member": "keras_pbt.population.population",
    "PopulationProgress": "keras_pbt.population.progress",
    "configure_cpu_devices": "keras_pbt.population.devices",
    "assign_devices": "keras_pbt.population.devices",
    "Devices": "keras_pbt.population.devices",
    "PBTOracle": "keras_pbt.tuner.oracle",
    "PBTTuner": "keras_pbt.tuner.tuner",
}

# Subpackages reachable as attributes after `import keras_pbt`, each imported
# on first use with the modules listed (so `keras_pbt.tuner.convert` or
# `keras_pbt.population.devices` work as the README writes them).
_SUBMODULES = {
    "backend": (),
    "core": ("ancestry", "config", "errors", "explore", "final", "fire", "lineage", "lines",
             "noise", "pb2", "policy", "ranking", "selection", "space", "stats", "validation",
             "wide_start"),
    "population": ("checks", "data", "devices", "member", "member_checkpoint", "population",
                   "progress", "results", "threads", "wide_start"),
    "runtime": ("callback", "callback_state", "hyperparameters", "replay", "snapshot", "spread",
                "tunable"),
    "storage": ("checkpoint", "events", "payload", "store", "summary"),
    "tuner": ("convert",),
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        for sub in _SUBMODULES[name]:
            _import(f"keras_pbt.{name}.{sub}")
        return _import(f"keras_pbt.{name}")
    raise AttributeError(f"module 'keras_pbt' has no attribute {name!r}")


def _import(module):
    """Imports a glue module; Keras on its default backend without
    TensorFlow installed gets an error that says what to do."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        raise ModuleNotFoundError(
            "Keras runs on its TensorFlow backend here (its default, or KERAS_BACKEND / "
            "~/.keras/keras.json), and TensorFlow is not installed: pip install "
            "'keras-pbt[tensorflow]', or set KERAS_BACKEND=jax or KERAS_BACKEND=torch. "
            f"Received: KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}",
            name="tensorflow",
        ) from error


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "AncestryEntry",
    "BarrierTimeoutError",
    "CheckpointError",
    "ConfigurationError",
    "Choice",
    "Decision",
    "Explorer",
    "FinalChoice",
    "FireSelection",
    "FixedMargin",
    "Margin",
    "ImprovementRate",
    "LastValue",
    "MovingAverage",
    "PB2Explorer",
    "Ranking",
    "Hyperparameter",
    "InMemoryStore",
    "IntUniform",
    "Interval",
    "Iterated",
    "KeepLines",
    "LineageRecord",
    "LogUniform",
    "PBTPolicy",
    "Policy",
    "BoundaryPlan",
    "PopulationStopped",
    "PopulationStore",
    "Report",
    "Selection",
    "Snapshot",
    "StandardError",
    "TTestSelection",
    "TournamentSelection",
    "TruncationSelection",
    "Uniform",
    "WideStart",
    "ancestry",
    "ancestry_schedule",
    "read_lineage",
    "sample_space",
] + sorted(_LAZY)
