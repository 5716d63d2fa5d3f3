"""Routes of the PBT lineage TensorBoard plugin, over a real logdir.

The logdir holds a real tiny population run, a synthetic population written
with the same summary writer, and malformed data. The WSGI app is the real
TensorBoard app with its real data providers (the Python multiplexer-backed
one and, where installed, the Rust data server), driven by werkzeug's test
client: nothing listens on a socket.
"""

import collections
import json
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


def _get_json(client, path):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.get_data())
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.get_data())


@pytest.fixture(scope="module")
def logdir_info():
    return pbt_logdir.shared_logdir()


@pytest.fixture(scope="module", params=["python", "rust"])
def client(request, logdir_info):
    logdir, info = logdir_info
    client, ingester = _make_client(logdir, request.param)
    if request.param == "rust":
        # The data server loads asynchronously: wait until it has every run.
        want = len(info["lineage_a"])
        deadline = time.time() + 60
        while time.time() < deadline:
            got = _get_json(client, f"{PREFIX}/lineage?experiment=pop_a")
            if len(got["records"]) >= want:
                break
            time.sleep(0.3)
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
        f"pop_a/member_{m}" for m in {r.member for r in info["lineage_a"]})
    assert len(by_name["pop_b"]["runs"]) == 6
    assert by_name["pop_b"]["max_step"] == 150
    assert by_name["pop_a"]["max_step"] == max(r.step for r in info["lineage_a"])


def test_lineage_of_a_real_run_matches_what_it_recorded(client, logdir_info):
    _, info = logdir_info
    recorded = info["lineage_a"]
    data = _get_json(client, f"{PREFIX}/lineage?experiment=pop_a")
    assert set(data) == {"version", "experiment", "runs", "monitor", "mode", "members",
                         "num_exploits", "records", "errors"}
    assert data["errors"] == []
    assert data["monitor"] == "val_accuracy" and data["mode"] == "max"
    assert [m["id"] for m in data["members"]] == [0, 1, 2, pbt_logdir.HOSTILE_MEMBER]
    for m in data["members"]:
        assert set(m) == {"id", "run", "records"}
    assert len(data["records"]) == len(recorded)
    exploits = [r for r in recorded if r.is_exploit]
    assert exploits, "the fixture run must exploit at least once"
    assert data["num_exploits"] == len(exploits)
    served = {(r["member"], r["step"], r["action"], r["parent"], r["parent_step"])
              for r in data["records"]}
    assert served == {(r.member, r.step, r.action, r.parent, r.parent_step) for r in recorded}
    counts = collections.Counter(r.member for r in recorded)
    assert {m["id"]: m["records"] for m in data["members"]} == dict(counts)
    exploit = next(r for r in data["records"] if r["action"] == "exploit")
    assert set(exploit["hparams"]) == {"learning_rate", "momentum"}
    assert set(exploit["ops"]) == {"learning_rate", "momentum"}
    assert exploit["run"] == f"pop_a/member_{exploit['member']}"


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

    with pytest.raises(ValueError, match=message):
        plugin_lib.parse_tensor(np.array(payload))


def test_plugin_module_does_not_import_tensorflow():
    code = ("import sys, keras_pbt_tensorboard.plugin; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
