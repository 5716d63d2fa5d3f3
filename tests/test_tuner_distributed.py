"""keras-tuner's distributed mode: a chief and two worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import keras_tuner as kt

import keras_pbt

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuner_distributed_job.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(role, directory, port):
    env = dict(os.environ, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2")
    log = open(os.path.join(directory, f"{role}.log"), "w")
    return subprocess.Popen([sys.executable, JOB, directory], env=env, stdout=log,
                            stderr=subprocess.STDOUT), log


def test_chief_and_two_workers_finish_a_pbt_search_with_exploits_across_workers(tmp_path, monkeypatch):
    directory = str(tmp_path)
    port = free_port()
    procs = [start(role, directory, port) for role in ("chief", "worker0", "worker1")]
    try:
        for proc, log in procs:
            # The chief polls keras-tuner's exit condition every 20 s: allow for it.
            proc.wait(timeout=240)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = {role: open(os.path.join(directory, f"{role}.log")).read()
            for role in ("chief", "worker0", "worker1")}
    assert [p.returncode for p, _ in procs] == [0, 0, 0], logs

    ran = {}
    for worker in ("worker0", "worker1"):
        with open(os.path.join(directory, f"ran_{worker}.jsonl")) as f:
            for line in f:
                ran[tuple(json.loads(line))] = worker
    assert sorted(ran) == [(m, s) for m in range(4) for s in range(5)]   # each segment once
    done = {w: json.load(open(os.path.join(directory, f"done_{w}.json")))
            for w in ("worker0", "worker1")}
    assert done["worker0"]["training_calls"] + done["worker1"]["training_calls"] == 20
    assert min(d["training_calls"] for d in done.values()) >= 3        # both worked
    for d in done.values():
        # Waiting for the other worker sleeps (backing off to 0.1 s); it does not spin.
        assert d["idle_waits"] <= d["idle_seconds"] / 0.05 + 1

    # The chief's state (chief.json, oracle.json, trial_*/), read back as the
    # chief would resume it, but in this process and without a server.
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    tuner = keras_pbt.PBTTuner(lambda hp: None, objective="val_loss", population_size=4,
                               max_epochs=5, quantile=0.5, seed=4, directory=directory,
                               project_name="dist")
    trials = tuner.oracle.trials
    assert len(trials) == 20 and {t.status for t in trials.values()} == {"COMPLETED"}
    exploits = [t for t in trials.values() if t.hyperparameters.values["pbt/action"] == "exploit"]
    assert len(exploits) == 8   # two losers at each of four decisions (val_loss never ties)
    across = 0
    for child in exploits:
        v = child.hyperparameters.values
        parent = trials[v["pbt/parent_trial"]].hyperparameters.values
        if ran[(v["pbt/member"], v["pbt/segment"])] != ran[(parent["pbt/member"], parent["pbt/segment"])]:
            across += 1
    assert across >= 1, "no exploit copied a checkpoint written by the other worker"
    lineage = tuner.oracle.lineage()
    assert sum(r.action == "exploit" for r in lineage) == 8
    assert sorted(os.listdir(tuner.logdir)) == [f"member_{m}" for m in range(4)]
    assert isinstance(tuner.oracle, kt.Oracle)
