"""Timers wrapped around library functions, for the benchmarks' breakdowns.

`wrap(owner, name, label)` replaces `owner.name` by a wrapper that adds the
call's wall time and its thread CPU time (`time.thread_time`) to `label`.
Wall time counts waiting (for the GIL, a core, a lock, the disk); CPU time
counts only what the calling thread computed, which the load of a shared
machine changes far less. Nested labels overlap (a boundary's total holds
its barrier wait).

    from benchmarks import timers      # or `import timers` from benchmarks/
    timers.wrap(snapshot, "capture", "snapshot capture")
    ...
    timers.report(runs=3)
"""

import collections
import threading
import time

WALL = collections.Counter()
CPU = collections.Counter()
COUNTS = collections.Counter()
_LOCK = threading.Lock()


def wrap(owner, name, label):
    """Times every call of `owner.name` under `label`; returns the original."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            with _LOCK:
                WALL[label] += wall
                CPU[label] += cpu
                COUNTS[label] += 1

    wrapper.__wrapped__ = original
    setattr(owner, name, wrapper)
    return original


def count(label, n=1):
    """Adds `n` to the count of `label` (no time)."""
    with _LOCK:
        COUNTS[label] += n


def take():
    """`(wall, cpu, counts)` collected since the last `take`, and clears them."""
    with _LOCK:
        out = (collections.Counter(WALL), collections.Counter(CPU), collections.Counter(COUNTS))
        WALL.clear()
        CPU.clear()
        COUNTS.clear()
    return out


def report(wall, cpu, counts, runs, indent="  "):
    """Lines of a breakdown per run: label, wall s, CPU s, calls, per call."""
    lines = [f"{indent}{'':44s} {'wall s':>8s} {'CPU s':>8s} {'calls':>6s} {'ms/call wall, CPU':>18s}"]
    for label in sorted(set(wall) | set(counts), key=lambda k: -wall.get(k, 0.0)):
        n = counts[label] / runs
        w, c = wall.get(label, 0.0) / runs, cpu.get(label, 0.0) / runs
        if label not in wall:
            lines.append(f"{indent}{label:44s} {'':8s} {'':8s} {n:6g}")
            continue
        per = f"{1e3 * w / n:7.2f}, {1e3 * c / n:6.2f}" if n else ""
        lines.append(f"{indent}{label:44s} {w:8.3f} {c:8.3f} {n:6g} {per:>18s}")
    return lines


def watch_gc():
    """Adds Python's garbage collections (any thread) to the label
    `"garbage collection (gen 2)"` (full ones) or `"garbage collection (gen 0-1)"`."""
    import gc

    started = {}

    def callback(phase, info):
        if phase == "start":
            started[threading.get_ident()] = (time.perf_counter(), time.thread_time())
            return
        begin = started.pop(threading.get_ident(), None)
        if begin is None:
            return
        label = ("garbage collection (gen 2)" if info.get("generation") == 2
                 else "garbage collection (gen 0-1)")
        with _LOCK:
            WALL[label] += time.perf_counter() - begin[0]
            CPU[label] += time.thread_time() - begin[1]
            COUNTS[label] += 1

    gc.callbacks.append(callback)
