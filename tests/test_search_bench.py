"""The search-quality benchmark's harness, where a reader trusts what it
computes: the compute count of a PBT run, the choose-best rules in both
modes, the goal table, the lines alive per boundary, and the label guard of
the shared cache (benchmarks/search_*.py; tiny data, a tiny population)."""

import dataclasses
import os
import sys

import pytest

import keras_pbt
from keras_pbt.core.lineage import LineageRecord
from tests.pbt_helpers import blobs
from tests.test_population import SPACE
from tests.test_population import build

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

import search_arms  # noqa: E402
import search_baselines  # noqa: E402
import search_pbt  # noqa: E402
import search_report  # noqa: E402
import search_tasks  # noqa: E402


def _load(seed):
    return {name: blobs(n, seed=seed * 10 + i)
            for i, (name, n) in enumerate((("train", 64), ("val", 40), ("select", 40),
                                           ("test", 40)))}


TINY = search_tasks.Task("tiny", "blobs", _load, build, SPACE, epochs=2, batch_size=32,
                         data="blobs")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(search_tasks.CACHE_ENV, str(tmp_path))
    return tmp_path


def test_a_pbt_run_counts_every_trained_epoch_and_scores_each_final_choice(cache):
    arm = search_arms.Arm(size=2, configs=2)
    info = search_pbt.pbt_run(TINY, 0, "pbt", arm, 1, "t", log=lambda s: None)
    # 2 members x 2 epochs, counted by the callback and seen in the histories.
    assert info["compute"] == 4
    assert info["compute_per_member"] == {"0": 2, "1": 2}
    assert info["history_epochs"] == 4
    assert [e["interval"] for e in info["per_interval"]] == [1, 2]
    assert set(info["finals"]) == {"", "+select"}
    chosen = info["finals"]["+select"]
    best = max(info["members"], key=lambda m: (info["members"][m]["select"], -int(m)))
    assert chosen["member"] == best
    assert chosen["test"] == info["members"][best]["test"]
    # Cached under the arm, the interval and the label: read back, not rerun.
    assert search_pbt.pbt_run(TINY, 0, "pbt", arm, 1, "t", run=False) == info
    assert search_pbt.pbt_run(TINY, 0, "pbt", arm, 1, "other", run=False) is None
    assert search_pbt.pbt_run(TINY, 0, "pbt", arm, 2, "t", run=False) is None
    wide = search_arms.Arm(size=2, configs=2, policy=keras_pbt.Policy(quantile=0.4))
    assert search_pbt.pbt_run(TINY, 0, "pbt", wide, 1, "t", run=False) is None


def test_random_search_trains_the_drawn_configurations_in_order_and_counts_them(cache):
    trials = search_baselines.random_search(TINY, 0, 3, log=lambda s: None, workers=2)
    assert [t["hparams"] for t in trials] == search_tasks.draw_configs(SPACE, 3, 0)
    assert [t["epochs"] for t in trials] == [2, 2, 2]
    assert [len(t["curve"]) for t in trials] == [2, 2, 2]
    # A larger budget extends the cached draws; a smaller one reads them.
    assert search_baselines.random_search(TINY, 0, 2, run=False) == trials[:2]


def test_a_keras_tuner_arm_counts_the_epochs_of_every_trial(cache):
    # Hyperband(max_epochs=2, factor=3): two trials of 2 epochs; keras-tuner
    # deep-copies the callbacks of each trial, and the counter survives it.
    out = search_baselines.keras_tuner_arm(TINY, 0, "hyperband", log=lambda s: None)
    assert out["trials"] == 2
    assert out["compute"] == out["planned"] == 4
    best = out["top"][0]
    assert out["chosen"] == {k: best[k] for k in ("val", "select", "test")}
    on_select = max(out["top"], key=lambda t: t["select"])
    assert out["select"]["select"] == on_select["select"]
    assert search_baselines.keras_tuner_arm(TINY, 0, "hyperband", run=False) == out


def test_a_label_cached_with_other_library_code_is_refused(cache):
    arm = search_arms.Arm()
    path = search_pbt.pbt_path(TINY, 0, "pbt", arm, 2, "old")
    search_tasks.write_json(path, {"fingerprint": "not-this-code", "commit": "abc"})
    with pytest.raises(search_pbt.StaleLabel, match="label 'old'"):
        search_pbt.pbt_run(TINY, 0, "pbt", arm, 2, "old")
    # Reading the cache (the report) takes it as it is.
    assert search_pbt.pbt_run(TINY, 0, "pbt", arm, 2, "old", run=False)["commit"] == "abc"


def test_an_arm_described_by_a_memory_address_is_refused():
    arm = search_arms.Arm(population={"setters": {"x": object()}})
    with pytest.raises(ValueError, match="address"):
        arm.describe()


def test_the_task_key_changes_with_its_definition():
    assert dataclasses.replace(TINY, epochs=4).key != TINY.key
    assert dataclasses.replace(TINY).key == TINY.key


def _trial(val, select, test):
    return {"val": val, "select": select, "test": test}


def test_random_search_chooses_on_val_and_select_in_either_mode():
    trials = [_trial(0.5, 0.5, 0.1), _trial(0.6, 0.5, 0.2), _trial(0.5, 0.6, 0.3)]
    # max: a tie on val + select goes to the first drawn.
    assert search_report.choose_random(trials, "max")["test"] == 0.2
    assert search_report.choose_random(trials, "min")["test"] == 0.1
    assert search_report.best_alone(trials, "max") == "2"
    assert search_report.best_alone(trials, "min") == "0"


def _rows(mode):
    # pbt: better than random 1x in seeds 0, 1, worse in seed 2 (in `mode`).
    sign = 1 if mode == "max" else -1
    rows = []
    for seed, (r1, r4, pbt) in enumerate([(0.80, 0.90, 0.85), (0.80, 0.90, 0.95),
                                          (0.80, 0.90, 0.70)]):
        arms = {name: dict(_trial(v * sign, v * sign, v * sign), compute=c)
                for name, v, c in (("random 1x", r1, 240), ("random 4x", r4, 960),
                                   ("pbt i2", pbt, 240))}
        rows.append({"seed": seed, "arms": arms, "runs": {}})
    return rows


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_goal_table_judges_means_and_seeds_below_in_the_task_mode(mode):
    rows = _rows(mode)
    table = search_report.goal_table(rows, ["pbt i2"], mode, ["random 1x", "random 4x"])
    line = table.splitlines()[2].split(" | ")
    # Means: pbt 0.8333 >= random 1x 0.80; < random 4x 0.90; one seed below random 1x.
    assert line[2] == "yes"
    assert line[3].startswith("**no**")
    assert line[4].rstrip(" |") == "yes (1/3)"
    strict = search_report.goal_table(rows, ["pbt i2"], mode, [], max_below=0)
    assert strict.splitlines()[2].endswith("**no** (1/3) |")
    arms = search_report.arm_table(rows, ["pbt i2"], mode, one_x=240)
    assert arms.splitlines()[2].endswith("| 1/3 | 1/3 | 240 (1.00) |")


def test_lines_alive_per_boundary_follow_exploits():
    def rec(member, action, interval, parent=None):
        return LineageRecord(member_id=member, step=0, action=action, hparams={"learning_rate": 0.1},
                             parent=parent, interval=interval)

    lineage = [rec(m, "init", 0) for m in range(4)]
    lineage += [rec(0, "keep", 1), rec(1, "keep", 1), rec(2, "exploit", 1, parent=0),
                rec(3, "keep", 1)]
    # Boundary 2: 3 copies 2, which carries line 0 since boundary 1.
    lineage += [rec(0, "keep", 2), rec(1, "exploit", 2, parent=0), rec(2, "keep", 2),
                rec(3, "exploit", 2, parent=2)]
    summary = search_report.lineage_summary(lineage)
    assert [e["roots"] for e in summary["per_interval"]] == [["0", "1", "0", "3"],
                                                             ["0", "0", "0", "0"]]
    assert summary["replaced"] == {"0": None, "1": 2, "2": 1, "3": 2}
    assert [d[0] for d in search_report.diversity(summary)] == [3, 1]


def test_a_cache_entry_claimed_by_a_live_process_is_left_to_it(tmp_path):
    path = str(tmp_path / "entry.json")
    with open(path + ".lock", "w") as f:
        f.write(str(os.getppid()))  # alive: the process that started this one
    with search_tasks.claim(path) as mine:
        assert mine is False
    with open(path + ".lock", "w") as f:
        f.write(str(2**22 + 4321))  # above Linux's largest pid: a process that died
    with search_tasks.claim(path) as mine:
        assert mine is True
        with open(path + ".lock") as f:
            assert f.read() == str(os.getpid())
    assert not os.path.exists(path + ".lock")
