"""The **PBT lineage** TensorBoard plugin: family tree, schedules, population.

Reads the lineage records that `keras_pbt.storage.summary.MemberSummaryWriter` writes
(tag `pbt_lineage`, one JSON string tensor per boundary) through
`context.data_provider`, never the deprecated multiplexer, and serves them to
an ES module front end (`static/index.js`) inside TensorBoard's plugin iframe.

Routes (under `data/plugin/pbt_lineage/`):
    `/index.js`        the front end module.
    `/static/<file>`   other shipped front-end files; only files that exist in
                       `static/` are served (no path traversal).
    `/experiments`     the populations in the logdir: runs grouped by their
                       parent directory.
    `/lineage?experiment=<name>`  the parsed records of one population, its
                       best member with that member's ancestry and schedule
                       (`best_of`), and the errors met reading them.

Every JSON answer spells non-finite floats as `keras_pbt.core.lineage.encode` does
(`"NaN"`, `"Infinity"`, `"-Infinity"`).
"""

import json
import os
import posixpath

import werkzeug
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

# The record format and the best-member / ancestry rules live in the library;
# importing them does not import TensorFlow.
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import ancestry as schedule_lib

PLUGIN_NAME = lineage_lib.PLUGIN_NAME
LINEAGE_TAG = lineage_lib.LINEAGE_TAG
# Version of the plugin metadata content (`{"version": 1}`) this plugin reads.
METADATA_VERSION = lineage_lib.LINEAGE_VERSION
# Version of this plugin's JSON API, sent with every answer.
API_VERSION = 1
# The experiment name of runs directly under the logdir.
ROOT_EXPERIMENT = "."
# Read at most this many tensors per run (one per boundary).
_MAX_TENSORS_PER_RUN = 1_000_000

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def experiment_of(run):
    """The population a run belongs to: its parent directory (`"."` at the root)."""
    parent = posixpath.dirname(run.replace("\\", "/"))
    return parent or ROOT_EXPERIMENT


def _static_files():
    """Relative POSIX paths of every file shipped in `static/`."""
    found = {}
    for dirpath, _, filenames in os.walk(_STATIC_DIR):
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, _STATIC_DIR).replace(os.sep, "/")
            found[rel] = full
    return found


def parse_tensor(value):
    """Parses one lineage tensor value into `LineageRecord`s.

    The payload is read by `keras_pbt.core.lineage.loads`, the one reader of
    lineage JSON (and of its spelling of NaN).

    Args:
        value: the datum's NumPy value (a scalar bytes/str tensor).

    Raises:
        ValueError: on anything but a valid payload of a known version.
    """
    try:
        text = value.item() if hasattr(value, "item") else value
    except ValueError as e:  # not a scalar
        raise ValueError(f"expected a scalar string tensor, got shape {value.shape}") from e
    if not isinstance(text, (bytes, str)):
        raise ValueError(f"expected a string tensor, got {type(text).__name__}")
    try:
        return lineage_lib.loads(text)
    except (TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"malformed lineage record: {e}") from e


def best_of(records, mode=None):
    """The best member, its ancestry and its schedule, as the tab shows them.

    Computed with `keras_pbt.core.ancestry`, the functions `Population`, the
    keras-tuner oracle and `replay` use: the tab draws this, it does not
    re-derive it.

    Args:
        records: `LineageRecord`s of one population, in the order they were
            read.
        mode: `"min"` or `"max"`; by default the mode in the records.

    Returns:
        `(best, error)`: `best` is None or a dict with `member`, `metric`,
        `ranking` (member ids, best first), `ancestry` (`AncestryEntry.to_dict()`
        rows, oldest first), `schedule` (hyperparameter -> `[[step, value]]`)
        and `end_step` (steps the best member's weights received); `error`
        says why `best` is None (`""` otherwise).
    """
    metrics = schedule_lib.latest_metrics(records)
    if not metrics:
        return None, "No member has reported a metric yet."
    try:
        member = schedule_lib.best_member(records, mode)
        entries = schedule_lib.ancestry(records, member, mode)
    except ValueError as e:
        return None, str(e)
    if mode is None:
        mode = schedule_lib.records_mode(records)
    best = {
        "member": member,
        "metric": metrics[member],
        "ranking": schedule_lib.order_members(metrics, mode),
        "ancestry": [e.to_dict() for e in entries],
        "schedule": schedule_lib.schedule_by_hparam(entries),
        "end_step": entries[-1].end_step,
    }
    return lineage_lib.encode(best), ""


def _metadata_version(content):
    try:
        data = json.loads(content.decode("utf-8") if isinstance(content, bytes) else content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data.get("version") if isinstance(data, dict) else None


class PBTLineagePlugin(base_plugin.TBPlugin):
    """Serves the PBT lineage tab.

    Args:
        context: the `base_plugin.TBContext` TensorBoard gives plugins.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        self._data_provider = context.data_provider
        hint = (context.sampling_hints or {}).get(PLUGIN_NAME)
        # 0 (or no hint) means every record: lineage must not be downsampled.
        self._downsample = hint if hint else _MAX_TENSORS_PER_RUN
        self._static = _static_files()

    def is_active(self):
        # TensorBoard enables the tab when the data provider lists data for
        # `plugin_name`; no extra scan here.
        return False

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="PBT lineage")

    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_index_js,
            "/static/*": self._serve_static,
            "/experiments": self._serve_experiments,
            "/lineage": self._serve_lineage,
        }

    # ---------------------------------------------------------------- static

    def _file_response(self, request, rel):
        path = self._static.get(rel)
        if path is None:
            return http_util.Respond(request, "Not found", "text/plain", code=404)
        with open(path, "rb") as f:
            body = f.read()
        content_type = _CONTENT_TYPES.get(os.path.splitext(rel)[1], "application/octet-stream")
        return http_util.Respond(request, body, content_type)

    @wrappers.Request.application
    def _serve_index_js(self, request):
        return self._file_response(request, "index.js")

    @wrappers.Request.application
    def _serve_static(self, request):
        marker = f"/plugin/{PLUGIN_NAME}/static/"
        path = request.path
        rel = path[path.find(marker) + len(marker):] if marker in path else ""
        # Only names of shipped files are served: "..", absolute paths,
        # backslashes and encoded variants never match an entry.
        if ".." in rel.split("/") or "\\" in rel or rel.startswith("/"):
            return http_util.Respond(request, "Forbidden path", "text/plain", code=403)
        return self._file_response(request, rel)

    # ------------------------------------------------------------------ data

    def _list(self, ctx, experiment_id, runs=None):
        run_tag_filter = provider.RunTagFilter(runs=runs, tags=[LINEAGE_TAG])
        return self._data_provider.list_tensors(
            ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME,
            run_tag_filter=run_tag_filter,
        )

    def experiments_impl(self, ctx, experiment_id):
        """Populations in the logdir, sorted by name."""
        groups = {}
        for run, tags in self._list(ctx, experiment_id).items():
            series = tags.get(LINEAGE_TAG)
            if series is None:
                continue
            group = groups.setdefault(
                experiment_of(run), {"runs": [], "max_step": 0, "max_wall_time": 0.0}
            )
            group["runs"].append(run)
            group["max_step"] = max(group["max_step"], int(series.max_step))
            group["max_wall_time"] = max(group["max_wall_time"], float(series.max_wall_time))
        experiments = [
            {"name": name, "runs": sorted(g["runs"]), "max_step": g["max_step"],
             "max_wall_time": g["max_wall_time"]}
            for name, g in sorted(groups.items())
        ]
        return lineage_lib.encode({"version": API_VERSION, "experiments": experiments})

    def lineage_impl(self, ctx, experiment_id, experiment):
        """The records of one population, its best member (`best_of`), and the
        errors met reading them."""
        listing = self._list(ctx, experiment_id)
        runs = sorted(run for run in listing if experiment_of(run) == experiment)
        errors = []
        readable = []
        for run in runs:
            series = listing[run].get(LINEAGE_TAG)
            version = _metadata_version(series.plugin_content) if series else None
            if version != METADATA_VERSION:
                errors.append({
                    "run": run, "step": None,
                    "message": f"unsupported plugin data version {version!r} "
                               f"(this plugin reads version {METADATA_VERSION})",
                })
                continue
            readable.append(run)
        data = {}
        if readable:
            data = self._data_provider.read_tensors(
                ctx, experiment_id=experiment_id, plugin_name=PLUGIN_NAME,
                downsample=self._downsample,
                run_tag_filter=provider.RunTagFilter(runs=readable, tags=[LINEAGE_TAG]),
            )
        parsed_records, rows = [], []
        seen = set()
        for run in readable:
            for datum in data.get(run, {}).get(LINEAGE_TAG, []):
                try:
                    parsed = parse_tensor(datum.numpy)
                except ValueError as e:
                    errors.append({"run": run, "step": int(datum.step), "message": str(e)})
                    continue
                for record in parsed:
                    key = (str(record.member_id), record.step, record.action, record.interval)
                    if key in seen:
                        continue
                    seen.add(key)
                    parsed_records.append(record)
                    row = record.to_dict()
                    row["run"] = run
                    rows.append(row)
        rows.sort(key=lambda r: (r["step"], str(r["member"])))
        metrics = schedule_lib.latest_metrics(parsed_records)
        members = {}
        for r in rows:
            m = members.setdefault(str(r["member"]), {
                "id": r["member"], "run": r["run"], "records": 0,
                "metric": metrics.get(r["member"]),
            })
            m["records"] += 1
        monitor = next((r["monitor"] for r in reversed(rows) if r.get("monitor")), "")
        try:
            mode = schedule_lib.records_mode(parsed_records)
        except ValueError:  # no metric yet, or records of several modes
            mode = ""
        best, best_error = best_of(parsed_records, mode or None)
        for m in members.values():
            m["metric"] = lineage_lib.encode(m["metric"])
        # Rows and `best` are encoded already (`to_dict`, `best_of`).
        return {
            "version": API_VERSION,
            "experiment": experiment,
            "runs": runs,
            "monitor": monitor,
            "mode": mode,
            "members": sorted(members.values(), key=lambda m: schedule_lib.member_order_key(m["id"])),
            "num_exploits": sum(1 for r in rows if r["action"] in ("exploit", "restart")),
            "records": rows,
            "best": best,
            "best_error": best_error,
            "errors": errors,
        }

    @wrappers.Request.application
    def _serve_experiments(self, request):
        ctx = plugin_util.context(request.environ)
        experiment_id = plugin_util.experiment_id(request.environ)
        return _respond_json(request, self.experiments_impl(ctx, experiment_id))

    @wrappers.Request.application
    def _serve_lineage(self, request):
        experiment = request.args.get("experiment")
        if experiment is None:
            raise werkzeug.exceptions.BadRequest("Missing `experiment` argument")
        ctx = plugin_util.context(request.environ)
        experiment_id = plugin_util.experiment_id(request.environ)
        return _respond_json(request, self.lineage_impl(ctx, experiment_id, experiment))


def _respond_json(request, data):
    # Standard JSON in `keras_pbt.core.lineage`'s spelling: the answers are encoded
    # with `lineage.encode`, and `allow_nan=False` proves nothing slipped by.
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return http_util.Respond(request, text, "application/json")


class PBTLineageLoader(base_plugin.TBLoader):
    """Loads `PBTLineagePlugin` and keeps every lineage record in memory.

    TensorBoard keeps only 10 samples per tensor series by default, which
    would drop boundaries from the family tree; unless the user passed
    `--samples_per_plugin=pbt_lineage=N`, this asks for all (`0`).
    """

    def fix_flags(self, flags):
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(PLUGIN_NAME, 0)

    def load(self, context):
        return PBTLineagePlugin(context)
