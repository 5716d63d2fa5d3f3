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


def start(role, directory, port, log_mode="w", **extra_env):
    """Starts tuner_distributed_job.py as `role`; its output goes to `<role>.log`
    (`log_mode="a"` keeps the runs before). Returns (process, log file)."""
    env = dict(os.environ, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
    log = open(os.path.join(directory, f"{role}.log"), log_mode)
    return subprocess.Popen([sys.executable, JOB, directory], env=env, stdout=log,
                            stderr=subprocess.STDOUT), log


def stop(procs):
    """Kills the processes of `start` still running, reaps them, closes their logs."""
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_chief_and_two_workers_finish_a_pbt_search_with_exploits_across_workers(tmp_path, monkeypatch):
    directory = str(tmp_path)
    port = free_port()
    # worker1 waits until worker0 trained generation 0 (one segment of each of
    # the 4 members), then worker0 waits until worker1 trained generation 1;
    # then both go on concurrently. So each exploit of the first decision
    # copies a checkpoint the other process wrote (left to timing, which
    # worker gets which segment follows a pattern, and no exploit may cross).
    procs = [
        start("chief", directory, port),
        start("worker0", directory, port, PBT_TEST_WAIT="4:ran_worker1.jsonl:4"),
        start("worker1", directory, port, PBT_TEST_WAIT="0:ran_worker0.jsonl:4"),
    ]
    try:
        for proc, log in procs:
            # The chief polls keras-tuner's exit condition every 20 s: allow for it.
            proc.wait(timeout=400)
    finally:
        stop(procs)
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
    assert {m for (m, s), w in ran.items() if s == 0 and w == "worker0"} == {0, 1, 2, 3}
    assert {m for (m, s), w in ran.items() if s == 1 and w == "worker1"} == {0, 1, 2, 3}
    # Waiting for the other worker (an IDLE answer from the chief) sleeps,
    # backing off from 0.05 s to max_idle_sleep=0.1 s: every run of waits
    # is 0.05, 0.1, 0.1, ... (a spinning or constant wait fails this). The
    # barrier between generations makes a worker wait: no sleep at all
    # would mean the IDLE answers were never seen.
    assert any(d["idle_sleeps"] for d in done.values()), done
    for d in done.values():
        runs = []
        for sleep in d["idle_sleeps"]:
            if sleep == 0.05:
                runs.append([])
            assert runs, d["idle_sleeps"]
            runs[-1].append(sleep)
        for run in runs:
            assert run == [min(0.05 * 2 ** i, 0.1) for i in range(len(run))], d["idle_sleeps"]

    # The chief's state (chief.json, oracle.json, trial_*/), read back as the
    # chief would resume it, but in this process and without a server.
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    tuner = keras_pbt.PBTTuner(lambda hp: None, objective="val_loss", population_size=4,
                               policy=keras_pbt.Policy(quantile=0.5), seed=4, directory=directory,
                               project_name="dist")
    assert tuner.pbt_oracle.max_epochs == 5  # the budget the search ran with, resumed
    trials = tuner.oracle.trials
    assert len(trials) == 20 and {t.status for t in trials.values()} == {"COMPLETED"}
    exploits = [t for t in trials.values() if t.hyperparameters.values["pbt/action"] == "exploit"]
    assert len(exploits) == 8   # two losers at each of four decisions (val_loss never ties)
    across = []
    for child in exploits:
        v = child.hyperparameters.values
        parent = trials[v["pbt/parent_trial"]].hyperparameters.values
        if ran[(v["pbt/member"], v["pbt/segment"])] != ran[(parent["pbt/member"], parent["pbt/segment"])]:
            across.append(v["pbt/segment"])
    assert across.count(1) == 2   # worker1 continued from worker0's checkpoints
    lineage = tuner.oracle.lineage()
    assert sum(r.action == "exploit" for r in lineage) == 8
    assert sorted(os.listdir(tuner.logdir)) == [f"member_{m}" for m in range(4)]
    assert isinstance(tuner.oracle, kt.Oracle)
