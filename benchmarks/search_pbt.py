"""One PBT run of the search-quality benchmark, cached under a label.

A PBT run depends on keras-pbt's code, so its cache entry is keyed by the
task, the seed, the interval, the arm's full description
(`search_arms.Arm.describe`) and a label the command line sets (`--label`).
The entry also records a fingerprint of the library's source
(`library_fingerprint`): filling a label's missing runs with other library
code than the label's cached runs were made with is refused, so a run of
old code is never mistaken for a new one (choose a new label instead).
"""

import functools
import hashlib
import os
import subprocess
import time

import keras

import keras_pbt
import search_baselines
import search_report
import search_tasks

CPU_DEVICES = 4


class StaleLabel(RuntimeError):
    """A label's cached runs were made with other library code than this one."""


@functools.lru_cache(maxsize=None)
def library_fingerprint():
    """12 hex digits of the SHA-1 of every `.py` file of the imported `keras_pbt`,
    read once per process (the code this process runs, even if the files
    change under it)."""
    root = os.path.dirname(os.path.abspath(keras_pbt.__file__))
    digest = hashlib.sha1()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def library_commit():
    """The last commit that changed the library's folder (`+dirty` when it has
    uncommitted changes), or None outside a git checkout."""
    folder = os.path.dirname(os.path.abspath(keras_pbt.__file__))

    def git(*args):
        return subprocess.run(["git", *args, "--", folder], cwd=folder, capture_output=True,
                              text=True, timeout=30).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%h")
        return (commit + ("+dirty" if git("status", "--porcelain") else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def pbt_path(task, seed, name, arm, interval, label):
    key = hashlib.sha1("|".join([task.key, str(interval), label, arm.describe()]).encode())
    return os.path.join(search_tasks.cache_dir(), f"pbt_{task.name}_seed{seed}_i{interval}_"
                        f"{name}_{label}_{key.hexdigest()[:8]}.json")


def pbt_run(task, seed, name, arm, interval, label, data=None, log=print, fresh=False, run=True):
    """One PBT run: every final member's scores, each final choice, compute, lineage.

    Args:
        task: a `search_tasks.Task`.
        seed: the seed (splits, the starting configurations and weights,
            the population's seed).
        name: the arm's name in `search_arms.ARMS`.
        arm: the `search_arms.Arm`.
        interval: epochs between decisions, or `"iterated"` (`population_interval`).
        label: the label of the library code this run measures.
        data: the task's splits for `seed` (loaded when needed).
        log: `fn(text)` for progress lines.
        fresh: rerun, ignoring the cache.
        run: when False, only read the cache.

    Returns:
        dict with `members` (id -> metric on val / select / test), `finals`
        (choice name -> `member` id or None, and its metrics), `compute`
        (epochs trained, counted by an `EpochCounter` on every member's
        fit), `compute_per_member`, `history_epochs` (epochs in the
        members' histories), `exploits`, `time`, `per_interval` and
        `replaced` (`search_report.lineage_summary`), and what made it
        (`arm`, `description`, `label`, `fingerprint`, `commit`); None when
        `run` is False and nothing is cached.

    Raises:
        StaleLabel: when running, and this label's cached entry was made by
            other library code.
    """
    path = pbt_path(task, seed, name, arm, interval, label)
    cached = None if fresh else search_tasks.read_json(path)
    if cached is not None and run and cached["fingerprint"] != library_fingerprint():
        raise StaleLabel(
            f"The run cached under label {label!r} ({os.path.basename(path)}) was made with "
            f"keras_pbt {cached['fingerprint']} ({cached.get('commit')}), not this code "
            f"({library_fingerprint()}): choose a new --label, or --fresh to redo it. "
            f"Received: label={label!r}")
    if cached is not None or not run:
        return cached
    with search_tasks.claim(path) as mine:
        if not mine:
            log(f"  {task.name} seed {seed} {name} i{interval} [{label}]: left to the process "
                "running it")
            return None
        cached = None if fresh else search_tasks.read_json(path)
        return cached or _run(task, seed, name, arm, interval, label, data, log, path)


def population_interval(interval):
    """The `interval=` of a run: an int, or `"iterated"` for `keras_pbt.Iterated()`
    (Iterated PBT with its defaults, starting at every epoch)."""
    if interval == "iterated":
        return keras_pbt.Iterated()
    if not isinstance(interval, int):
        raise ValueError(f"An interval is an int or 'iterated'. Received: interval={interval!r}")
    return interval


def _run(task, seed, name, arm, interval, label, data, log, path):
    data = data or task.load(seed)
    configs = search_tasks.draw_configs(task.space, arm.configs, seed)
    counter = search_baselines.EpochCounter()
    keras.utils.set_random_seed(seed)
    kwargs = dict(population_size=arm.size, monitor=task.monitor, mode=task.mode,
                  interval=population_interval(interval), synchronous=True,
                  devices=keras_pbt.Devices(num_cpu=CPU_DEVICES),
                  seed=seed, initial_hparams=configs, policy=arm.make_policy())
    kwargs.update(arm.population)
    pop = keras_pbt.Population(task.build, task.space, **kwargs)
    fit = dict(validation_data=data["val"], epochs=task.epochs, batch_size=task.batch_size,
               validation_freq=interval if isinstance(interval, int) else 1)
    fit.update(arm.fit)
    start = time.perf_counter()
    pop.fit(*data["train"], callbacks=lambda mid: [counter.for_key(mid)], verbose=0, **fit)
    elapsed = time.perf_counter() - start
    members = {str(m.member_id): task.scores(m.model, data) for m in pop.members}
    finals = {}
    for choice, fn in arm.finals.items():
        model = fn(pop, data)
        member = next((m.member_id for m in pop.members if m.model is model), None)
        finals[choice] = dict(member=None if member is None else str(member),
                              **(members[str(member)] if member is not None
                                 else task.scores(model, data)))
    summary = search_report.lineage_summary(pop.lineage)
    out = {
        "arm": name, "interval": interval, "label": label, "description": arm.describe(),
        "fingerprint": library_fingerprint(), "commit": library_commit(),
        "members": members, "finals": finals,
        "compute": counter.epochs,
        "compute_per_member": {str(k): v for k, v in counter.per_key.items()},
        "history_epochs": sum(len(h.get("loss", [])) for h in pop.history.values()),
        "exploits": sum(r.action == "exploit" for r in pop.lineage),
        "restarts": sum(r.action == "restart" for r in pop.lineage),
        "champions": len(pop.store.champions()),
        "time": elapsed, **summary,
    }
    log(f"  {task.name} seed {seed} {name} i{interval} [{label}]: " + ", ".join(
        f"{c or 'last'} {f['test']:.4f}" for c, f in finals.items())
        + f" ({out['exploits']} exploits, {out['compute']} epochs, {elapsed:.0f} s)")
    search_tasks.write_json(path, out)
    return out
