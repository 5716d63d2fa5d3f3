"""A keras-tuner chief that stops at any moment resumes: state files, reload, workers.

Across processes: a real chief and two workers on 127.0.0.1
(tests/tuner_distributed_job.py). The chief kills itself at five points of
its state writes, one per run (the job's test-only PBT_TEST_KILL_CHIEF),
including in the middle of a write; after each kill everything is started
again with overwrite=False, and the last run finishes the search. Then:
every member reached its last segment, no segment was trained to the end
twice, the lineage is continuous, and no process is left running.

In one process: keras-tuner's in-place state writes and its save-before-pop
in `end_trial`, replayed on a real `PBTOracle`; and a real worker whose
chief is not there.
"""

import json
import os
import socket
import time

import pytest

from tests.test_tuner_distributed import free_port
from tests.test_tuner_distributed import start
from tests.test_tuner_distributed import stop

POPULATION = 2
SEGMENTS = 5  # MAX_EPOCHS of the job, one epoch per segment

# One run per kill point, in this order (each leaves segments for the next).
KILLS = [
    "trial.json:RUNNING:2:after",    # a trial.json that oracle.json never names
    "trial.json:COMPLETED:1:during",  # a finished segment whose end is half written
    "trial.json:COMPLETED:1:after",   # ended in trial.json, ongoing in oracle.json
    "oracle.json:ended:1:during",     # the end's oracle.json half written
    "trial.json:last:1:after",        # a last segment ended, its final record not written
]


def _start(role, directory, port, **env):
    """One process of a run; every run appends to the same `<role>.log`."""
    return start(role, directory, port, log_mode="a", PBT_TEST_POPULATION=str(POPULATION),
                 KERAS_PBT_CHIEF_TIMEOUT="20", **env)


def _wait_for_server(chief, port, timeout=300):
    """Until the chief accepts connections (the workers then find it at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chief.poll() is not None:
            return
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the chief never served")


def _run(directory, kill=None):
    """One run: chief, then two workers. Returns the three return codes."""
    port = free_port()
    chief = _start("chief", directory, port, **({"PBT_TEST_KILL_CHIEF": kill} if kill else {}))
    procs = [chief]
    try:
        _wait_for_server(chief[0], port)
        # Both workers start asking together (a worker still importing when the
        # other finished the search would find the chief gone, and stop with
        # ChiefUnavailableError: what a worker started after the search does).
        procs += [_start(w, directory, port, PBT_TEST_READY=f"{port}:worker0,worker1")
                  for w in ("worker0", "worker1")]
        chief[0].wait(timeout=400)
        if kill:
            # Everything is restarted: the workers of a killed chief go too
            # (test_tuner_distributed_worker_gives_up covers their own exit).
            for proc, _ in procs[1:]:
                proc.kill()
        for proc, _ in procs[1:]:
            proc.wait(timeout=400)
    finally:
        stop(procs)
    assert all(proc.poll() is not None for proc, _ in procs)  # none left running
    return [proc.returncode for proc, _ in procs]


def test_a_chief_killed_at_five_state_writes_resumes_and_trains_every_segment_once(tmp_path, monkeypatch):
    directory = str(tmp_path)
    for kill in KILLS:
        codes = _run(directory, kill)
        assert codes[0] == -9, (kill, codes, open(tmp_path / "chief.log").read()[-3000:])
    codes = _run(directory)
    logs = {r: open(tmp_path / f"{r}.log").read()[-3000:] for r in ("chief", "worker0", "worker1")}
    assert codes == [0, 0, 0], logs

    trained = []
    for worker in ("worker0", "worker1"):
        path = tmp_path / f"trained_{worker}.jsonl"
        if path.exists():
            trained += [tuple(json.loads(line)[:2]) for line in path.read_text().splitlines()]
    # A worker killed after its segment's checkpoint but before its log line
    # leaves a segment that nobody trains again: at most once each.
    assert len(trained) == len(set(trained)), sorted(trained)

    import keras_pbt

    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    tuner = keras_pbt.PBTTuner(lambda hp: None, objective="val_loss", population_size=POPULATION,
                               seed=4, directory=directory,
                               project_name="dist", policy=keras_pbt.Policy(quantile=0.5))
    oracle = tuner.oracle
    trials = oracle.trials
    assert len(trials) == POPULATION * SEGMENTS
    assert {t.status for t in trials.values()} == {"COMPLETED"}
    assert sorted((t.hyperparameters.values["pbt/member"], t.hyperparameters.values["pbt/segment"])
                  for t in trials.values()) == [(m, s) for m in range(POPULATION)
                                                 for s in range(SEGMENTS)]
    for t in trials.values():  # every segment's checkpoint is there
        assert os.path.exists(os.path.join(tuner.get_trial_dir(t.trial_id), "manifest.json"))
    lineage = oracle.lineage()
    for member in range(POPULATION):
        records = [r for r in lineage if r.member_id == member]
        assert [r.interval for r in records] == list(range(SEGMENTS + 1)), records
        assert records[0].action == "init"
        steps = [r.step for r in records]
        assert steps == sorted(steps)
    for trial in trials.values():
        parent = trial.hyperparameters.values["pbt/parent_trial"]
        assert parent == "" or trials[parent].status == "COMPLETED"

# ------------------------------------------------------------ in one process


def _oracle(tmp_path, **kwargs):
    import keras_tuner as kt
    from keras_tuner.engine.base_tuner import BaseTuner

    from keras_pbt.tuner import PBTOracle

    hp = kt.HyperParameters()
    hp.Float("lr", 1e-3, 1e-1, sampling="log")
    oracle = PBTOracle(objective=kt.Objective("score", "max"), hyperparameters=hp,
                       population_size=2, max_epochs=2, seed=3, **kwargs)
    tuner = BaseTuner(oracle=oracle, directory=str(tmp_path), project_name="p")  # reloads
    oracle.verbose = 0
    return oracle, tuner


def _complete(oracle, trial, score):
    oracle.update_trial(trial.trial_id, {"score": score, "pbt/step": 10})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_oracle_json_names_no_ended_segment_as_ongoing(tmp_path):
    # keras-tuner's end_trial saves before it drops the trial from the
    # ongoing ones; a chief killed after that save trained it again.
    oracle, _ = _oracle(tmp_path)
    trial = oracle.create_trial("w0")
    _complete(oracle, trial, 0.5)
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())
    assert state["ongoing_trials"] == {} and state["end_order"] == [trial.trial_id]


def test_a_segment_ended_in_trial_json_is_not_retried_after_a_stale_oracle_json(tmp_path):
    oracle, tuner = _oracle(tmp_path)
    first = [oracle.create_trial(f"w{i}") for i in range(2)]
    tuner.save()
    stale = (tmp_path / "p" / "oracle.json").read_text()  # both segments ongoing
    _complete(oracle, first[0], 0.5)
    # The chief died after trial.json said COMPLETED, before oracle.json did.
    (tmp_path / "p" / "oracle.json").write_text(stale)
    again, _ = _oracle(tmp_path)
    assert again.trials[first[0].trial_id].status == "COMPLETED"
    retried = again.create_trial("w9")
    assert retried.trial_id == first[1].trial_id  # only the unfinished one is retried
    assert again.create_trial("w8").status == "IDLE"  # not the finished one


def test_a_trial_json_oracle_json_never_named_is_forgotten(tmp_path):
    oracle, tuner = _oracle(tmp_path)
    trial = oracle.create_trial("w0")
    tuner.save()
    stale = (tmp_path / "p" / "oracle.json").read_text()
    orphan = oracle.create_trial("w1")  # its trial.json is written, then the chief dies
    (tmp_path / "p" / "oracle.json").write_text(stale)
    again, _ = _oracle(tmp_path)
    assert sorted(again.trials) == [trial.trial_id]
    assert again.create_trial("w0").trial_id == trial.trial_id  # the unfinished one, retried
    new = again.create_trial("w1")   # the same decision, under the same id
    assert new.trial_id == orphan.trial_id
    assert new.hyperparameters.values == orphan.hyperparameters.values


@pytest.mark.parametrize("name", ["oracle.json", "trial.json", "tuner0.json"])
@pytest.mark.parametrize("content", [b"", b'{"ongoing_trials": {"w0": '])
def test_an_unreadable_state_file_is_refused_naming_it(tmp_path, name, content):
    import keras_pbt
    from keras_pbt.storage.checkpoint import CheckpointError

    def tuner():
        return keras_pbt.PBTTuner(lambda hp: None, objective="val_loss", population_size=2,
                                  directory=str(tmp_path), project_name="p")

    first = tuner()
    first.oracle.set_max_epochs(2)  # as search(epochs=2) does
    first.oracle.hyperparameters.Float("lr", 1e-3, 1e-1)
    trial = first.oracle.create_trial("tuner0")
    first.save()
    path = tmp_path / "p" / name
    if name == "trial.json":
        path = tmp_path / "p" / f"trial_{trial.trial_id}" / name
    path.write_bytes(content)  # as keras-tuner's in-place write leaves it when killed
    with pytest.raises(CheckpointError, match=str(path)) as info:
        tuner()
    assert "overwrite=True" in str(info.value) and info.value.path == str(path)


def test_a_cut_lineage_line_after_the_last_save_is_dropped(tmp_path):
    oracle, tuner = _oracle(tmp_path)
    oracle.create_trial("w0")
    tuner.save()
    before = [r.to_dict() for r in oracle.lineage()]
    with open(tmp_path / "p" / "pbt_lineage.jsonl", "a") as f:
        f.write('{"version": 1, "member": 1, "st')  # killed in the middle of an append
    again, _ = _oracle(tmp_path)
    assert [r.to_dict() for r in again.lineage()] == before


def test_a_worker_whose_chief_is_gone_stops_with_a_clear_error(tmp_path, monkeypatch):
    import threading

    import keras
    import numpy as np

    import keras_pbt
    from keras_pbt.tuner.chief_client import ChiefUnavailableError

    port = free_port()  # nothing listens there
    for key, value in dict(KERASTUNER_TUNER_ID="worker0", KERASTUNER_ORACLE_IP="127.0.0.1",
                           KERASTUNER_ORACLE_PORT=str(port), KERAS_PBT_CHIEF_TIMEOUT="2").items():
        monkeypatch.setenv(key, value)

    def build(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(keras.optimizers.SGD(hp.Float("lr", 1e-3, 1e-1, sampling="log")), "mse")
        return model

    tuner = keras_pbt.PBTTuner(build, objective="val_loss", population_size=2,
                               directory=str(tmp_path), project_name="p")
    x = np.zeros((8, 4), "float32")
    errors = []

    def search():
        try:
            tuner.search(x, x[:, :2], validation_data=(x, x[:, :2]), epochs=2, verbose=0)
        except Exception as e:  # noqa: BLE001 - checked below
            errors.append(e)

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    thread.join(timeout=120)   # keras-tuner's own client would wait an hour
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ChiefUnavailableError), errors
    assert f"127.0.0.1:{port}" in str(errors[0]) and "KERAS_PBT_CHIEF_TIMEOUT" in str(errors[0])


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf", "nan"])
def test_the_chief_timeout_must_be_a_positive_number_of_seconds(value):
    from keras_pbt.tuner.chief_client import chief_timeout

    with pytest.raises(ValueError, match=f"Received: KERAS_PBT_CHIEF_TIMEOUT='{value}'"):
        chief_timeout({"KERAS_PBT_CHIEF_TIMEOUT": value})
    assert chief_timeout({}) == 120.0 and chief_timeout({"KERAS_PBT_CHIEF_TIMEOUT": "2.5"}) == 2.5
