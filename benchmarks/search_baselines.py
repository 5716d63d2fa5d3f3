"""The baseline arms of the search-quality benchmark: random search, and
keras-tuner's `Hyperband` and `BayesianOptimization` as a Keras user runs them.

None of them depends on keras-pbt's code (random search draws its
configurations with `keras_pbt.sample_space`, which is fixed by the seed),
so their cache entries are keyed by the task and the seed only, and serve
every PBT arm and every label.

Compute is counted in trained epochs by `EpochCounter`, a Keras callback
handed to every fit (random search: each configuration's history).

* random search: the first `n` configurations of the seed (the first 8 are
  PBT's starting points, with the same initial weights), each trained alone
  with plain `fit` for the task's epochs; its choice is made by
  `search_report.choose_random` (best on val and select together).
* `hyperband`: `keras_tuner.Hyperband(max_epochs=task.epochs, factor=3)`,
  one Hyperband iteration (its default budget).
* `bayesopt`: `keras_tuner.BayesianOptimization(max_trials=8)` (1x: 8 trials
  of the task's epochs), its defaults otherwise (the first
  `max(3 * dimensions, 3)` trials are random draws).

A keras-tuner arm hands back `get_best_models(1)[0]`: the best trial on
the task's monitor, with the weights of its best epoch. Its `+select` choice
is the best on `select` among its 8 best models by the monitor.
"""

import os
import shutil
import tempfile
import threading
import time

import keras
import keras_tuner

import keras_pbt
import search_tasks

KERAS_TUNER_ARMS = ("hyperband", "bayesopt")
TOP_K = search_tasks.SIZE  # models a keras-tuner arm's +select choice looks at
WORKERS = 4  # random-search configurations trained at once, one per logical CPU device


class EpochCounter(keras.callbacks.Callback):
    """Counts the epochs that every model it is handed to really trains.

    One counter serves many fits: `copy.deepcopy` returns the counter itself
    (keras-tuner deep-copies its callbacks for each trial, a `Population`
    its callback list for each member), so every trained epoch of every
    trial, member or restart lands in `epochs`. Only `on_epoch_end` is
    hooked: a batch hook would turn off Keras' asynchronous dispatch.

    Attributes:
        epochs: epochs counted so far, in all.
        per_key: dict key -> epochs counted through `for_key(key)` (the
            counter's own hook counts under `None`).
    """

    def __init__(self):
        super().__init__()
        self.epochs = 0
        self.per_key = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def count(self, key, n=1):
        with self._lock:
            self.epochs += n
            self.per_key[key] = self.per_key.get(key, 0) + n

    def for_key(self, key):
        """A callback counting into this counter under `key` (e.g. a member id)."""
        return _CountInto(self, key)

    def on_epoch_end(self, epoch, logs=None):
        self.count(None)


class _CountInto(keras.callbacks.Callback):
    def __init__(self, counter, key):
        super().__init__()
        self.counter = counter
        self.key = key

    def __deepcopy__(self, memo):
        return self

    def on_epoch_end(self, epoch, logs=None):
        self.counter.count(self.key)


# ------------------------------------------------------------ random search


def random_path(task, seed):
    return os.path.join(search_tasks.cache_dir(), f"random_{task.name}_seed{seed}_{task.key}.json")


def random_search(task, seed, n, data=None, log=print, fresh=False, run=True, workers=WORKERS):
    """Trains the first `n` configurations of `seed` alone, each with plain `fit`.

    Configurations train `workers` at a time, each in its own thread on its
    own logical CPU device (the way a `Population` trains its members);
    each is built after `keras.utils.set_random_seed` of its own seed, so
    the first 8 start from PBT's members' weights.

    Args:
        task: a `search_tasks.Task`.
        seed: the seed (configurations, weights, splits).
        n: how many configurations.
        data: the task's splits for `seed` (loaded when needed).
        log: `fn(text)` for progress lines.
        fresh: retrain, ignoring the cache.
        run: when False, only read the cache (returns what is there).
        workers: configurations trained at once.

    Returns:
        A list of dicts, one per configuration in draw order: `hparams`,
        `val`, `select`, `test` (the task's metric at the end), `curve` (the
        task's monitor after every epoch), `epochs` (trained) and `time`
        (its share of the wall time of the configurations trained with it).
    """
    path = random_path(task, seed)
    cached = [] if fresh else (search_tasks.read_json(path) or [])
    if len(cached) >= n or not run:
        return cached[:n]
    with search_tasks.claim(path) as mine:
        if not mine:
            log(f"  random {task.name} seed {seed}: left to the process running it")
            return cached[:n]
        cached = [] if fresh else (search_tasks.read_json(path) or [])
        return _random_search(task, seed, n, data, log, cached, workers, path)


def _random_search(task, seed, n, data, log, cached, workers, path):
    import tensorflow as tf

    configs = search_tasks.draw_configs(task.space, n, seed)
    seeds = search_tasks.weight_seeds(n, seed)
    data = data or task.load(seed)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    results = list(cached)
    for first in range(len(cached), n, workers):
        batch = list(range(first, min(first + workers, n)))
        jobs = []
        for j, i in enumerate(batch):
            device = devices[j % len(devices)]
            with tf.device(device):
                keras.utils.set_random_seed(seeds[i])
                jobs.append((device, task.build(dict(configs[i]))))
        start = time.perf_counter()
        histories = _fit_all(jobs, data, task)
        share = (time.perf_counter() - start) / len(batch)
        for i, (device, model), history in zip(batch, jobs, histories):
            row = dict(hparams=configs[i], curve=[float(v) for v in history[task.monitor]],
                       epochs=len(history["loss"]), time=share, **task.scores(model, data))
            results.append(row)
            log(f"  random {task.name} seed {seed} config {i}: val {row['val']:.4f} "
                f"test {row['test']:.4f}")
        search_tasks.write_json(path, results)
    return results


def _fit_all(jobs, data, task):
    """Fits every `(device, model)` in its own thread; their histories, in order."""
    histories = [None] * len(jobs)
    errors = []

    def fit(k, device, model):
        import tensorflow as tf

        try:
            with tf.device(device):
                histories[k] = model.fit(
                    *data["train"], validation_data=data["val"], epochs=task.epochs,
                    batch_size=task.batch_size, verbose=0).history
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            errors.append(error)

    threads = [threading.Thread(target=fit, args=(k, *job), name=f"random-{k}")
               for k, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return histories


# -------------------------------------------------------------- keras-tuner


def tuner_hparams(hp, space):
    """keras-pbt's space written with keras-tuner's `hp` (the same ranges and
    sampling), as a dict name -> value for `task.build`."""
    values = {}
    for name, spec in space.items():
        if isinstance(spec, keras_pbt.LogUniform):
            values[name] = hp.Float(name, spec.low, spec.high, sampling="log")
        elif isinstance(spec, keras_pbt.Uniform):
            values[name] = hp.Float(name, spec.low, spec.high, step=spec.step)
        elif isinstance(spec, keras_pbt.IntUniform):
            values[name] = hp.Int(name, spec.low, spec.high, step=spec.step,
                                  sampling="log" if spec.log else "linear")
        elif isinstance(spec, keras_pbt.Choice):
            values[name] = hp.Choice(name, list(spec.values))
        else:
            raise TypeError(f"No keras-tuner spelling for {spec!r}. Received: {name}={spec!r}")
    return values


def tuner_path(task, seed, kind):
    return os.path.join(search_tasks.cache_dir(), f"{kind}_{task.name}_seed{seed}_{task.key}.json")


def make_tuner(kind, task, seed, directory):
    def build(hp):
        return task.build(tuner_hparams(hp, task.space))

    objective = keras_tuner.Objective(task.monitor, direction=task.mode)
    common = dict(objective=objective, seed=seed, directory=directory, project_name=kind,
                  overwrite=True)
    if kind == "hyperband":
        return keras_tuner.Hyperband(build, max_epochs=task.epochs, factor=3, **common)
    if kind == "bayesopt":
        return keras_tuner.BayesianOptimization(build, max_trials=search_tasks.SIZE, **common)
    raise ValueError(f"`kind` must be one of {KERAS_TUNER_ARMS}. Received: kind={kind!r}")


def keras_tuner_arm(task, seed, kind, data=None, log=print, fresh=False, run=True):
    """One keras-tuner search, as a Keras user runs it, and what it hands back.

    Returns:
        dict with `chosen` (the task's metric on val / select / test of
        `get_best_models(1)[0]`), `select` (the same for the best on
        `select` of its `TOP_K` best models), `top` (those models' trial
        ids, hyperparameters, tuner scores and metrics), `compute` (epochs
        trained, counted), `planned` (epochs the trials asked for),
        `trials` and `time`; None when `run` is False and nothing is cached.
    """
    path = tuner_path(task, seed, kind)
    cached = None if fresh else search_tasks.read_json(path)
    if cached is not None or not run:
        return cached
    with search_tasks.claim(path) as mine:
        if not mine:
            log(f"  {kind} {task.name} seed {seed}: left to the process running it")
            return None
        cached = None if fresh else search_tasks.read_json(path)
        return cached or _search(task, seed, kind, data, log, path)


def _search(task, seed, kind, data, log, path):
    data = data or task.load(seed)
    counter = EpochCounter()
    directory = tempfile.mkdtemp(prefix=f"kt-{kind}-")
    try:
        keras.utils.set_random_seed(seed)
        tuner = make_tuner(kind, task, seed, directory)
        start = time.perf_counter()
        tuner.search(*data["train"], validation_data=data["val"], epochs=task.epochs,
                     batch_size=task.batch_size, callbacks=[counter], verbose=0)
        elapsed = time.perf_counter() - start
        trials = tuner.oracle.get_best_trials(TOP_K)
        models = tuner.get_best_models(len(trials))
        top = []
        for trial, model in zip(trials, models):
            top.append(dict(trial=trial.trial_id, hparams=_plain(trial.hyperparameters.values),
                            score=trial.score, **task.scores(model, data)))
        every = list(tuner.oracle.trials.values())
        planned = sum(t.hyperparameters.values.get("tuner/epochs", task.epochs)
                      - t.hyperparameters.values.get("tuner/initial_epoch", 0) for t in every)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    choice = max(range(len(top)), key=lambda i: (
        top[i]["select"] if task.mode == "max" else -top[i]["select"], -i))
    out = {"chosen": _metrics(top[0]), "select": _metrics(top[choice]), "top": top,
           "compute": counter.epochs, "planned": planned, "trials": len(every),
           "time": elapsed, "keras_tuner": keras_tuner.__version__}
    log(f"  {kind} {task.name} seed {seed}: test {out['chosen']['test']:.4f}, +select "
        f"{out['select']['test']:.4f}, {out['compute']} epochs in {len(every)} trials "
        f"({elapsed:.0f} s)")
    search_tasks.write_json(path, out)
    return out


def _metrics(row):
    return {k: row[k] for k in ("val", "select", "test")}


def _plain(values):
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}
