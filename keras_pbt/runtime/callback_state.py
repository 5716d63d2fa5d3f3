"""`MemberState`: what one PBT member carries across `fit` calls and checkpoints.

Pure Python + NumPy. A `PBTCallback` owns one (`callback.state`): its
hyperparameters, its counters, its random generator and its latest
evaluations since its last exploit (for rankings that read several). The
callback changes it through the methods below, and a checkpoint saves and
restores it through the public pair `get_state()` / `set_state()` (as
keras-tuner's `Stateful`), never through private fields.
"""

import collections
import zlib

import numpy as np


class MemberState:
    """One member's PBT state.

    Args:
        member_id: the member's id.
        hparams: its initial hyperparameters, or `None` until read from the model.
        seed: the population's seed; the member's generator is seeded with
            it and the member id.
        history_length: how many latest evaluations to keep (the policy's
            `history_length`; 1 keeps none besides the metric itself).

    Attributes:
        hparams: the hyperparameters it trains with now.
        steps: its own optimizer steps (an exploit does not change them).
        epochs: the epochs it trained.
        boundaries: the interval boundaries it passed.
        exploits: how many times it copied another member.
        initialised: whether its `init` lineage record is written.
        rng: its `numpy.random.Generator` (parent draws and explore).
        start_metric: the metric of the weights its current interval started
            from (the parent's after an exploit).
    """

    def __init__(self, member_id, hparams, seed, history_length):
        self.member_id = member_id
        self.seed = int(seed)
        self.hparams = None if hparams is None else dict(hparams)
        self.steps = self.epochs = self.boundaries = self.exploits = 0
        self.initialised = False
        self.rng = np.random.default_rng([self.seed, zlib.crc32(repr(member_id).encode())])
        self.start_metric = None
        self._recent = collections.deque(maxlen=history_length)
        self._recent_steps = collections.deque(maxlen=history_length)

    def observe(self, metric, step):
        """Adds the member's evaluation at `step`.

        Returns:
            `(recent, recent_steps)`: the latest evaluations since the last
            exploit and their steps, for `Report` (empty tuples when the
            policy reads the metric alone).
        """
        self._recent.append(metric)
        self._recent_steps.append(step)
        if self._recent.maxlen <= 1:
            return (), ()
        return tuple(self._recent), tuple(self._recent_steps)

    def on_record(self, record):
        """Follows one of the member's lineage records: after an exploit or a
        restart the earlier evaluations belong to other weights."""
        if record.action in ("exploit", "restart"):
            self._recent.clear()
            self._recent_steps.clear()
            self.start_metric = record.parent_metric
        elif record.action == "keep":
            self.start_metric = record.metric

    def get_state(self):
        """This state as JSON-friendly values, for `set_state`.

        Returns:
            dict: `member_id`, `hparams`, `steps`, `epochs`, `boundaries`,
            `exploits`, `initialised`, `rng` (the generator's state),
            `recent` (metrics since the last exploit), `recent_steps`
            (their steps), `start_metric` and `seed`.
        """
        return {
            "member_id": self.member_id,
            "hparams": None if self.hparams is None else dict(self.hparams),
            "steps": int(self.steps), "epochs": int(self.epochs),
            "boundaries": int(self.boundaries), "exploits": int(self.exploits),
            "initialised": bool(self.initialised), "rng": self.rng.bit_generator.state,
            "recent": [float(v) for v in self._recent],
            "recent_steps": [int(v) for v in self._recent_steps],
            "start_metric": None if self.start_metric is None else float(self.start_metric),
            "seed": int(self.seed),
        }

    def set_state(self, state):
        """Puts back a `get_state()` dict of the same member.

        Raises:
            ValueError: a key is missing, or the state is another member's.
        """
        missing = sorted(set(self.get_state()) - set(state))
        if missing:
            raise ValueError(f"`state` lacks {missing}. Received: state={state!r}")
        if state["member_id"] != self.member_id:
            raise ValueError(f"`state` must be member {self.member_id!r}'s. Received: state={state!r}")
        self.hparams = None if state["hparams"] is None else dict(state["hparams"])
        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])
        self.boundaries, self.exploits = int(state["boundaries"]), int(state["exploits"])
        self.initialised = bool(state["initialised"])
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self._recent.clear()
        self._recent.extend(float(v) for v in state["recent"])
        self._recent_steps.clear()
        self._recent_steps.extend(int(v) for v in state["recent_steps"])
        start = state["start_metric"]
        self.start_metric = None if start is None else float(start)
