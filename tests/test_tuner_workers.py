"""The worker threads of one `PBTTuner` process: they build every first model
before any of them trains (`keras_pbt.tuner.worker.FirstBuilds`)."""

import threading
import time

import keras
import keras_tuner as kt

import keras_pbt
from tests.pbt_helpers import X1
from tests.pbt_helpers import Y1
from tests.pbt_helpers import one_weight_model

DEVICES = ["/cpu:0", "/cpu:1", "/cpu:2"]


class RecordingHyperModel(kt.HyperModel):
    """Records when each worker thread ends a build and starts a segment's fit."""

    def __init__(self, log, fail_first_build_of=None):
        super().__init__()
        self.log = log
        self.fail_first_build_of = fail_first_build_of
        self._lock = threading.Lock()

    def build(self, hp):
        model = one_weight_model(keras.optimizers.SGD(
            hp.Float("learning_rate", 1e-3, 1.0, sampling="log")))
        member = hp.values.get("pbt/member")
        with self._lock:
            if member is not None and member == self.fail_first_build_of:
                self.fail_first_build_of = None
                raise ValueError(f"first build of member {member} fails")
            self.log.append(("built", threading.current_thread().name, time.monotonic()))
        return model

    def fit(self, hp, model, *args, **kwargs):
        with self._lock:
            self.log.append(("fit", threading.current_thread().name, time.monotonic()))
        return model.fit(*args, **kwargs)


def _search(tmp_path, log, **kwargs):
    tuner = keras_pbt.PBTTuner(RecordingHyperModel(log, **kwargs),
                               objective=kt.Objective("loss", "min"), population_size=3,
                               devices=DEVICES, seed=3,
                               directory=str(tmp_path), project_name="workers")
    tuner.search(X1, Y1, batch_size=2, epochs=2, verbose=0)
    return tuner


def test_no_worker_trains_before_every_worker_has_built(tmp_path):
    log = []
    tuner = _search(tmp_path, log)
    assert len(tuner.workers) == 3 and sum(w.builds for w in tuner.workers) == 3
    workers = [e for e in log if e[1].startswith("pbt-tuner")]  # not the roles' builds
    builds = [t for kind, _, t in workers if kind == "built"]
    fits = [t for kind, _, t in workers if kind == "fit"]
    assert len(builds) == 3 and {name for kind, name, _ in workers if kind == "built"} == {
        w for _, w, _ in workers}
    assert len(fits) == 6  # 3 members x 2 segments
    assert max(builds) < min(fits), log


def test_a_failed_first_build_does_not_hold_the_other_workers(tmp_path):
    log, errors = [], []

    def run():
        try:
            _search(tmp_path, log, fail_first_build_of=1)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(300)
    assert not thread.is_alive(), "the search hung behind a failed build"
    assert errors == []
    assert sum(kind == "fit" for kind, _, _ in log) >= 5  # the others trained on


def test_an_idle_worker_does_not_sleep_when_a_segment_is_ready():
    # The oracle of this process is asked under the wake-up's lock: a trial
    # that ended between the IDLE answer and the wait is not missed.
    from keras_pbt.tuner.worker import Worker

    worker = Worker("t", None)
    worker.next_sleep = 0.05
    ended = threading.Condition()
    assert worker.idle_wait(ended, lambda: True, 0.25) is False
    assert worker.idle_sleeps == [] and worker.next_sleep == 0.05
    assert worker.idle_wait(ended, lambda: False, 0.25) is True
    assert worker.idle_wait(ended, None, 0.25) is True  # a remote oracle: no way to ask
    assert worker.idle_sleeps == [0.05, 0.1] and worker.next_sleep == 0.2
