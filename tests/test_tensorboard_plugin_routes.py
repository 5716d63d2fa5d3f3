"""Routes of the PBT lineage TensorBoard plugin, over a real logdir.

The logdir holds a real tiny population run, a synthetic population written
with the same summary writer, and malformed data. The WSGI app is the real
TensorBoard app with its real data providers (the Python multiplexer-backed
one and, where installed, the Rust data server), driven by werkzeug's test
client: nothing listens on a socket.
"""

import collections
import json
import math
import os
import subprocess
import sys
import time

import pytest
from werkzeug.test import Client

sys.path.insert(0, os.path.dirname(__file__))
import pbt_logdir  # noqa: E402

from tensorboard import default  # noqa: E402
from tensorboard import program  # noqa: E402
from tensorboard.backend import application  # noqa: E402
from tensorboard.backend.event_processing import data_ingester  # noqa: E402
from tensorboard.data import server_ingester  # noqa: E402

from keras_pbt.core import ancestry as schedule_lib  # noqa: E402
from keras_pbt.core.lineage import LineageRecord  # noqa: E402
from keras_pbt_tensorboard import plugin as plugin_lib  # noqa: E402

PREFIX = "/data/plugin/pbt_lineage"


def _flags(logdir, *extra):
    # `default.get_plugins()` holds the dynamic plugins registered through
    # the `tensorboard_plugins` entry point: ours must be among them.
    tb = program.TensorBoard(plugins=default.get_plugins())
    tb.configure(argv=["tensorboard", "--logdir", logdir, "--reload_interval", "0",
                       "--reload_task", "blocking", *extra])
    return tb


def _make_client(logdir, kind, *extra):
    tb = _flags(logdir, *extra)
    if kind == "python":
        ingester = data_ingester.LocalDataIngester(tb.flags)
        ingester.start()  # blocking: loaded when it returns
        multiplexer = ingester.deprecated_multiplexer
    else:
        try:
            binary = server_ingester.get_server_binary()
        except server_ingester.NoDataServerError as e:
            pytest.skip(f"no TensorBoard data server: {e}")
        ingester = server_ingester.SubprocessServerDataIngester(
            server_binary=binary, logdir=logdir, reload_interval=0,
            channel_creds_type=tb.flags.grpc_creds_type,
            samples_per_plugin=tb.flags.samples_per_plugin,
        )
        ingester.start()
        multiplexer = None
    app = application.TensorBoardWSGIApp(
        tb.flags, tb.plugin_loaders, ingester.data_provider, None, multiplexer
    )
    return Client(app), ingester


def _stop(ingester):
    # The Rust data server exits when its stdin closes.
    stdin = getattr(ingester, "_stdin_handle", None)
    if stdin is not None:
        stdin.close()


def _no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name} in an answer")


def _get_json(client, path):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.get_data())
    assert response.headers["Content-Type"].startswith("application/json")
    # Standard JSON only: a browser rejects a bare NaN.
    return json.loads(response.get_data(), parse_constant=_no_constants)


def _wait_for_records(client, experiment, want, timeout=60):
    """The Rust data server loads asynchronously: wait until it has every record."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = _get_json(client, f"{PREFIX}/lineage?experiment={experiment}")
        if len(got["records"]) >= want:
            return
        time.sleep(0.3)


@pytest.fixture(scope="module")
def logdir_info():
    return pbt_logdir.shared_logdir()


@pytest.fixture(scope="module", params=["python", "rust"])
def client(request, logdir_info):
    logdir, info = logdir_info
    client, ingester = _make_client(logdir, request.param)
    if request.param == "rust":
        _wait_for_records(client, "pop_a", len(info["lineage_a"]))
    yield client
    _stop(ingester)


def test_entry_point_registers_the_loader():
    assert plugin_lib.PBTLineageLoader in default.get_dynamic_plugins()


def test_tab_is_listed_enabled_and_loads_as_an_es_module(client):
    listing = _get_json(client, "/data/plugins_listing")["pbt_lineage"]
    assert listing["enabled"] is True
    assert listing["tab_name"] == "PBT lineage"
    assert listing["loading_mechanism"] == {
        "type": "IFRAME", "module_path": f"{PREFIX}/index.js"}
    entry = client.get("/data/plugin_entry.html?name=pbt_lineage")
    assert entry.status_code == 200
    assert b'import("./index.js")' in entry.get_data()


def test_experiments_groups_runs_by_parent_directory(client, logdir_info):
    _, info = logdir_info
    data = _get_json(client, f"{PREFIX}/experiments")
    assert data["version"] == plugin_lib.API_VERSION
    by_name = {x["name"]: x for x in data["experiments"]}
    assert sorted(by_name) == ["pop_a", "pop_b", "pop_bad"]
    assert by_name["pop_a"]["runs"] == sorted(
        f"pop_a/member_{m}" for m in {r.member_id for r in info["lineage_a"]})
    assert len(by_name["pop_b"]["runs"]) == 6
    assert by_name["pop_b"]["max_step"] == 150
    assert by_name["pop_a"]["max_step"] == max(r.step for r in info["lineage_a"])


def test_lineage_of_a_real_run_matches_what_it_recorded(client, logdir_info):
    _, info = logdir_info
    recorded = info["lineage_a"]
    data = _get_json(client, f"{PREFIX}/lineage?experiment=pop_a")
    assert set(data) == {"version", "experiment", "runs", "monitor", "mode", "members",
                         "num_exploits", "records", "best", "best_error", "errors"}
    assert data["errors"] == []
    assert data["monitor"] == "val_accuracy" and data["mode"] == "max"
    assert [m["id"] for m in data["members"]] == [0, 1, 2, pbt_logdir.HOSTILE_MEMBER]
    for m in data["members"]:
        assert set(m) == {"id", "run", "records", "metric"}
    assert len(data["records"]) == len(recorded)
    exploits = [r for r in recorded if r.is_exploit]
    assert exploits, "the fixture run must exploit at least once"
    assert data["num_exploits"] == len(exploits)
    served = {(r["member"], r["step"], r["action"], r["parent"], r["parent_step"])
              for r in data["records"]}
    assert served == {(r.member_id, r.step, r.action, r.parent, r.parent_step) for r in recorded}
    counts = collections.Counter(r.member_id for r in recorded)
    assert {m["id"]: m["records"] for m in data["members"]} == dict(counts)
    exploit = next(r for r in data["records"] if r["action"] == "exploit")
    assert set(exploit["hparams"]) == {"learning_rate", "momentum"}
    assert set(exploit["ops"]) == {"learning_rate", "momentum"}
    assert exploit["run"] == f"pop_a/member_{exploit['member']}"


def _latest_metrics_by_hand(records):
    # Each member's metric at its latest record with one, records by step.
    latest = {}
    for r in sorted(records, key=lambda r: r.step):
        if r.metric is not None:
            latest[r.member_id] = r.metric
    return latest


def test_best_member_and_ancestry_of_a_real_run(client, logdir_info):
    _, info = logdir_info
    recorded = info["lineage_a"]
    data = _get_json(client, f"{PREFIX}/lineage?experiment=pop_a")
    best = data["best"]
    assert data["best_error"] == ""
    latest = _latest_metrics_by_hand(recorded)
    top = max(v for v in latest.values() if math.isfinite(v))
    winners = [m for m, v in latest.items() if v == top]
    ints = sorted(m for m in winners if isinstance(m, int))
    # Ties: integer ids by value before text ids.
    assert best["member"] == (ints[0] if ints else sorted(winners)[0])
    assert best["metric"] == pytest.approx(top)
    assert best["ranking"][0] == best["member"]
    assert sorted(map(str, best["ranking"])) == sorted(map(str, latest))
    assert {m["id"]: m["metric"] for m in data["members"]} == pytest.approx(latest)
    # The ancestry is a chain of real records: an initial record at step 0,
    # then each entry copied the previous one's member where its piece ended.
    chain = best["ancestry"]
    assert chain[0]["action"] == "init" and chain[0]["step"] == 0 and chain[0]["parent"] is None
    assert chain[-1]["member"] == best["member"]
    served = {(r["member"], r["step"], r["action"]): r for r in data["records"]}
    for before, entry in zip(chain, chain[1:]):
        assert entry["action"] in ("exploit", "restart")
        assert (entry["parent"], entry["parent_step"]) == (before["member"], before["member_end_step"])
        assert entry["step"] == before["end_step"]
        record = served[(entry["member"], entry["member_step"], entry["action"])]
        assert record["hparams"] == entry["hparams"] and record["parent"] == entry["parent"]
    # The same functions as replay and Population: the records the store kept
    # give the same answer as the records TensorBoard served.
    assert chain == [e.to_dict() for e in schedule_lib.ancestry(recorded, best["member"])]
    assert best["schedule"] == schedule_lib.schedule_by_hparam(
        schedule_lib.ancestry_schedule(recorded, best["member"]))
    assert set(best["schedule"]) == {"learning_rate", "momentum"}
    assert best["end_step"] == max(r.step for r in recorded if r.member_id == best["member"])


HANDMADE = "handmade"


def handmade_records():
    """A population whose best member, ties, NaN and ancestry are known by hand.

    Members 0, 1, 2, 10 (mode max). Step 10: 0 copies 1, and 10 copies 0's
    snapshot taken before 0's exploit. Step 20: 2 copies 0 (which had copied
    1); 10 restarts from 1 after its keep. Step 30: 2 and 10 tie at 0.9, 1
    diverged to NaN after the best metric of the run.
    """
    def r(member, step, action, lr, metric=None, parent=None, parent_step=None):
        return LineageRecord(member, step, action, {"lr": lr, "momentum": 0.9}, metric=metric,
                             parent=parent, parent_step=parent_step, monitor="val_accuracy",
                             mode="max", interval=step // 10)

    return {
        0: [[r(0, 0, "init", 0.1)], [r(0, 10, "exploit", 0.25, 0.1, 1, 10)],
            [r(0, 20, "keep", 0.25, 0.7)], [r(0, 30, "keep", 0.25, 0.85)]],
        1: [[r(1, 0, "init", 0.2)], [r(1, 10, "keep", 0.2, 0.9)],
            [r(1, 20, "keep", 0.2, 0.95)], [r(1, 30, "keep", 0.2, math.nan)]],
        2: [[r(2, 0, "init", 0.3)], [r(2, 10, "keep", 0.3, 0.5)],
            [r(2, 20, "exploit", 0.35, 0.3, 0, 20)], [r(2, 30, "keep", 0.35, 0.9)]],
        10: [[r(10, 0, "init", 0.4)], [r(10, 10, "exploit", 0.45, 0.2, 0, 10)],
             [r(10, 20, "keep", 0.45, 0.6)], [r(10, 20, "restart", 0.5, None, 1, 20)],
             [r(10, 30, "keep", 0.5, 0.9)]],
    }


@pytest.fixture(scope="module", params=["python", "rust"])
def handmade_client(request, tmp_path_factory):
    from keras_pbt.storage.summary import MemberSummaryWriter

    logdir = tmp_path_factory.mktemp("handmade_logdir")
    records = handmade_records()
    for member, writes in records.items():
        writer = MemberSummaryWriter(str(logdir / HANDMADE), member)
        for batch in writes:  # the restart is a second write at step 20
            writer.write(batch[0].step, records=batch)
        writer.close()
    client, ingester = _make_client(str(logdir), request.param)
    if request.param == "rust":
        _wait_for_records(client, HANDMADE, sum(len(w) for w in records.values()))
    yield client
    _stop(ingester)


def test_best_member_ancestry_and_schedule_are_served_as_known(handmade_client):
    data = _get_json(handmade_client, f"{PREFIX}/lineage?experiment={HANDMADE}")
    assert data["errors"] == [] and len(data["records"]) == 17
    assert {m["id"]: m["metric"] for m in data["members"]} == {0: 0.85, 1: "NaN", 2: 0.9, 10: 0.9}
    best = data["best"]
    # 2 and 10 tie: 2 comes first (as text "10" < "2" would not); member 1's
    # 0.95 is history, its NaN ranks last.
    assert (best["member"], best["metric"], best["ranking"]) == (2, 0.9, [2, 10, 0, 1])
    assert best["ancestry"] == [
        {"step": 0, "end_step": 10, "member": 1, "member_step": 0, "member_end_step": 10,
         "action": "init", "hparams": {"lr": 0.2, "momentum": 0.9}, "parent": None,
         "parent_step": None},
        {"step": 10, "end_step": 20, "member": 0, "member_step": 10, "member_end_step": 20,
         "action": "exploit", "hparams": {"lr": 0.25, "momentum": 0.9}, "parent": 1,
         "parent_step": 10},
        {"step": 20, "end_step": 30, "member": 2, "member_step": 20, "member_end_step": 30,
         "action": "exploit", "hparams": {"lr": 0.35, "momentum": 0.9}, "parent": 0,
         "parent_step": 20},
    ]
    assert best["schedule"] == {"lr": [[0, 0.2], [10, 0.25], [20, 0.35]], "momentum": [[0, 0.9]]}
    assert best["end_step"] == 30
    restart = next(r for r in data["records"] if r["action"] == "restart")
    assert (restart["member"], restart["step"], restart["parent"]) == (10, 20, 1)


def test_best_of_names_what_is_missing():
    assert plugin_lib.best_of([]) == (None, "No member has reported a metric yet.")
    orphan = [LineageRecord(0, 5, "exploit", {"lr": 0.1}, metric=0.5, parent=7, parent_step=5,
                            mode="max")]
    best, error = plugin_lib.best_of(orphan)
    assert best is None and "no records of parent of member 0 7" in error
    # A min-mode run: the lowest loss is best, NaN still last.
    loss = [LineageRecord(m, 0, "init", {"lr": 0.1}, mode="min") for m in (0, 1, 2)] + [
        LineageRecord(0, 4, "keep", {"lr": 0.1}, metric=0.3, mode="min"),
        LineageRecord(1, 4, "keep", {"lr": 0.1}, metric=math.nan, mode="min"),
        LineageRecord(2, 4, "keep", {"lr": 0.1}, metric=0.2, mode="min")]
    best, error = plugin_lib.best_of(loss)
    assert error == "" and best["member"] == 2 and best["ranking"] == [2, 0, 1]


def test_every_boundary_is_served_not_a_sample(client, logdir_info):
    # TensorBoard keeps 10 samples per tensor series unless told otherwise;
    # the plugin's loader asks for all of them.
    _, info = logdir_info
    data = _get_json(client, f"{PREFIX}/lineage?experiment=pop_b")
    per_member = collections.Counter(r["member"] for r in data["records"])
    assert per_member == {m: len(recs) for m, recs in info["records_b"].items()}
    assert min(per_member.values()) == 16
    want = sum(r.is_exploit for recs in info["records_b"].values() for r in recs)
    assert data["num_exploits"] == want > 0


def test_malformed_data_is_reported_and_the_rest_served(client, logdir_info):
    _, info = logdir_info
    data = _get_json(client, f"{PREFIX}/lineage?experiment=pop_bad")
    assert [(r["member"], r["step"]) for r in data["records"]] == [(0, 0), (0, 10)]
    errors = {(e["run"], e["step"]): e["message"] for e in data["errors"]}
    assert len(errors) == info["malformed"] + 1
    assert "truncated" in errors[("pop_bad/member_0", 20)]
    assert "version 7" in errors[("pop_bad/member_0", 30)]
    assert "hparams" in errors[("pop_bad/member_0", 40)]
    assert "string" in errors[("pop_bad/member_0", 50)]
    assert "version 99" in errors[("pop_bad/member_1", None)]
    # The server keeps serving the good populations.
    assert _get_json(client, f"{PREFIX}/lineage?experiment=pop_a")["errors"] == []


def test_unknown_and_missing_experiment(client):
    data = _get_json(client, f"{PREFIX}/lineage?experiment=nope")
    assert data["members"] == [] and data["records"] == [] and data["errors"] == []
    assert client.get(f"{PREFIX}/lineage").status_code == 400


def test_static_files_are_served_with_nosniff(client):
    js = client.get(f"{PREFIX}/index.js")
    assert js.status_code == 200
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert js.headers["X-Content-Type-Options"] == "nosniff"
    assert b"export async function render" in js.get_data()
    css = client.get(f"{PREFIX}/static/style.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert client.get(f"{PREFIX}/static/index.js").get_data() == js.get_data()


@pytest.mark.parametrize("path", [
    "/static/../plugin.py",
    "/static/..%2fplugin.py",
    "/static/%2e%2e/plugin.py",
    "/static/%2e%2e%2fplugin.py",
    "/static/..%5cplugin.py",
    "/static/../../keras_pbt_tensorboard/plugin.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/",
    "/static/missing.js",
])
def test_static_route_refuses_path_traversal(client, path):
    response = client.get(PREFIX + path)
    assert response.status_code in (403, 404), path
    body = response.get_data()
    assert b"PBTLineagePlugin" not in body and b"root:" not in body


def test_samples_per_plugin_given_by_the_user_is_kept(logdir_info):
    logdir, _ = logdir_info
    assert _flags(logdir).flags.samples_per_plugin == {"pbt_lineage": 0}
    tb = _flags(logdir, "--samples_per_plugin", "pbt_lineage=5,images=3")
    assert tb.flags.samples_per_plugin == {"pbt_lineage": 5, "images": 3}
    client, ingester = _make_client(logdir, "python", "--samples_per_plugin", "pbt_lineage=5")
    data = _get_json(client, f"{PREFIX}/lineage?experiment=pop_b")
    assert collections.Counter(r["member"] for r in data["records"]) == {m: 5 for m in range(6)}


@pytest.mark.parametrize("payload, message", [
    (pbt_logdir.TRUNCATED_PAYLOAD, "truncated"),
    ('{"version": 2, "records": []}', "version 2"),
    ('{"version": 1, "records": 5}', "malformed"),
    ('{"version": 1, "records": [{"version": 1}]}', "lacks fields"),
    ('{"version": 1, "records": [{"version": 1, "member": 0, "step": "x", '
     '"action": "keep", "hparams": {}}]}', "step"),
    (b"\xff\xfe", "UTF-8"),
    ("[1, 2]", "version"),
])
def test_parse_tensor_rejects_malformed_payloads(payload, message):
    import numpy as np

    with pytest.raises(ValueError, match="(?i)" + message):
        plugin_lib.parse_tensor(np.array(payload))


def test_plugin_module_does_not_import_tensorflow():
    code = ("import sys, keras_pbt_tensorboard.plugin; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
