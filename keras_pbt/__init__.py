"""keras-pbt: Population-Based Training for Keras 3 on TensorFlow.

The pure policy (search space, selection, explore, lineage, stores) imports
no TensorFlow; the Keras glue (`PBTCallback`, `HyperparameterApplier`,
`ScaledSchedule`, summaries) is imported on first use, so
`import keras_pbt.lineage` stays light (the TensorBoard plugin uses it).
"""

import importlib

from keras_pbt.checkpoint import CheckpointError
from keras_pbt.explore import Explorer
from keras_pbt.fire import FireSelection
from keras_pbt.lineage import LineageRecord
from keras_pbt.policy import Decision
from keras_pbt.pb2 import PB2Explorer
from keras_pbt.policy import BoundaryPlan
from keras_pbt.policy import PBTPolicy
from keras_pbt.policy_config import Policy
from keras_pbt.ranking import ImprovementRate
from keras_pbt.ranking import LastValue
from keras_pbt.ranking import MovingAverage
from keras_pbt.ranking import Ranking
from keras_pbt.schedule import AncestryEntry
from keras_pbt.schedule import ancestry
from keras_pbt.schedule import ancestry_schedule
from keras_pbt.schedule import read_lineage
from keras_pbt.selection import Report
from keras_pbt.selection import Selection
from keras_pbt.selection import TTestSelection
from keras_pbt.selection import TournamentSelection
from keras_pbt.selection import TruncationSelection
from keras_pbt.space import Choice
from keras_pbt.space import Hyperparameter
from keras_pbt.space import IntUniform
from keras_pbt.space import LogUniform
from keras_pbt.space import Uniform
from keras_pbt.space import sample_space
from keras_pbt.store import BarrierTimeoutError
from keras_pbt.store import ConfigurationError
from keras_pbt.store import InMemoryStore
from keras_pbt.store import PopulationStopped
from keras_pbt.store import PopulationStore
from keras_pbt.store import Snapshot

__version__ = "0.1.0"

# Public names that need TensorFlow/Keras, imported lazily (PEP 562).
_LAZY = {
    "PBTCallback": "keras_pbt.callback",
    "ScheduleCallback": "keras_pbt.schedule_callback",
    "replay": "keras_pbt.schedule_callback",
    "HyperparameterApplier": "keras_pbt.hyperparameters",
    "ScaledSchedule": "keras_pbt.hyperparameters",
    "MemberSummaryWriter": "keras_pbt.summary",
    "Population": "keras_pbt.population",
    "PopulationError": "keras_pbt.population",
    "NonFiniteStateError": "keras_pbt.population",
    "Member": "keras_pbt.population",
    "PopulationProgress": "keras_pbt.progress",
    "configure_cpu_devices": "keras_pbt.devices",
    "assign_devices": "keras_pbt.devices",
    "PBTOracle": "keras_pbt.tuner.oracle",
    "PBTTuner": "keras_pbt.tuner.tuner",
}

# Submodules reachable as attributes after `import keras_pbt`, each imported
# on first use; the value lists its own submodules imported with it (so
# `keras_pbt.tuner.convert` works as the README writes it).
_SUBMODULES = {"callback": (), "checkpoint": (), "data": (), "devices": (), "hyperparameters": (),
               "member": (), "member_checkpoint": (), "population": (), "progress": (),
               "schedule_callback": (), "snapshot": (), "summary": (), "threads": (),
               "tunable": (), "tuner": ("convert",)}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        for sub in _SUBMODULES[name]:
            importlib.import_module(f"keras_pbt.{name}.{sub}")
        return importlib.import_module(f"keras_pbt.{name}")
    raise AttributeError(f"module 'keras_pbt' has no attribute {name!r}")


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
    "FireSelection",
    "ImprovementRate",
    "LastValue",
    "MovingAverage",
    "PB2Explorer",
    "Ranking",
    "Hyperparameter",
    "InMemoryStore",
    "IntUniform",
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
    "TTestSelection",
    "TournamentSelection",
    "TruncationSelection",
    "Uniform",
    "ancestry",
    "ancestry_schedule",
    "read_lineage",
    "sample_space",
] + sorted(_LAZY)
