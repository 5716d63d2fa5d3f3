"""Tables, goals and diagnosis of the search-quality benchmark (pure NumPy).

`search_quality.py` gathers, per task and seed, a row: each arm's chosen
model's metric on val / select / test and its compute, and for each PBT run
its lineage summary. This module turns rows into the markdown that goes into
`benchmarks/RESULTS.md`. A "mode" is the task's: `"max"` (accuracy) or
`"min"` (MSE); "better" and "worse" follow it.
"""

import math

import numpy as np


def _better(a, b, mode):
    return a >= b if mode == "max" else a <= b


def choose_random(results, mode="max"):
    """Random search's choice: the best mean metric on val and select
    together (all the held-out data it may use; ties: the first drawn)."""
    sign = 1.0 if mode == "max" else -1.0
    best = max(range(len(results)),
               key=lambda i: (sign * (results[i]["val"] + results[i]["select"]), -i))
    return results[best]


def best_alone(results, mode="max"):
    """Index (a string, as member ids are cached) of the configuration that
    ends best on test when trained alone (ties: the first drawn)."""
    sign = 1.0 if mode == "max" else -1.0
    return str(max(range(len(results)), key=lambda i: (sign * results[i]["test"], -i)))


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def lineage_summary(lineage):
    """Lines (initial configurations) and hyperparameters per boundary.

    A member's line is the member whose initial weights it carries: it
    changes when the member copies (exploit) or is restarted from another.

    Args:
        lineage: the run's `LineageRecord`s (`pop.lineage`).

    Returns:
        dict with `per_interval` (one entry per boundary, in order:
        `interval`, `roots`: the line of every member with a record at
        that boundary after its decisions, `hparams`: their
        hyperparameters) and `replaced` (member -> first boundary at which
        its own weights were replaced, or None). Member ids are strings.
    """
    roots, hparams, replaced, by_interval = {}, {}, {}, {}
    for r in lineage:
        if r.action == "init":
            m = str(r.member_id)
            roots[m], hparams[m], replaced[m] = m, {k: _plain(v) for k, v in r.hparams.items()}, None
        elif r.interval:
            by_interval.setdefault(r.interval, []).append(r)
    per_interval = []
    for k in sorted(by_interval):
        old = dict(roots)
        present = []
        for r in by_interval[k]:
            m = str(r.member_id)
            present.append(m)
            if r.action in ("exploit", "restart") and r.parent is not None:
                roots[m] = old.get(str(r.parent), str(r.parent))
                if replaced.get(m) is None:
                    replaced[m] = k
            hparams[m] = {n: _plain(v) for n, v in r.hparams.items()}
        members = sorted(set(present), key=lambda m: (len(m), m))
        per_interval.append({"interval": k, "roots": [roots[m] for m in members],
                             "hparams": [dict(hparams[m]) for m in members]})
    return {"per_interval": per_interval, "replaced": replaced}


def diversity(summary, name="learning_rate"):
    """Per boundary: distinct lines alive, and the standard deviation of
    log10 of hyperparameter `name` across members."""
    out = []
    for entry in summary["per_interval"]:
        values = [h.get(name) for h in entry["hparams"]]
        spread = (float(np.std(np.log10(values)))
                  if values and all(isinstance(v, float) and v > 0 for v in values) else math.nan)
        out.append((len(set(entry["roots"])), spread))
    return out


def _fmt(mean, std):
    return f"{mean:.4f} +- {std:.4f}"


def arm_table(rows, arms, mode, one_x, base1="random 1x", base4="random 4x"):
    """Markdown: per arm, test mean +- std, val, select, val - test, seeds
    worse than `base1`, seeds at least as good as `base4`, compute.

    Args:
        rows: per-seed rows (`{"seed", "arms": {arm: {"val", "select",
            "test", "compute"}}}`).
        arms: the arm names, in table order (missing ones are skipped).
        mode: `"max"` or `"min"`.
        one_x: epochs of 1x compute (members x epochs).
        base1, base4: the arms compared with, seed by seed.
    """
    lines = [f"| arm | seeds | test (mean +- std) | val | select | val - test | worse than "
             f"{base1} (seeds) | at least {base4} (seeds) | compute, epochs (x 1x) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        got = [row for row in rows if arm in row["arms"]]
        if not got:
            continue
        test = np.array([r["arms"][arm]["test"] for r in got])
        val = np.array([r["arms"][arm]["val"] for r in got])
        sel = np.array([r["arms"][arm]["select"] for r in got])
        worse = [r for r in got if base1 in r["arms"]]
        n_worse = sum(not _better(r["arms"][arm]["test"], r["arms"][base1]["test"], mode)
                      for r in worse)
        vs4 = [r for r in got if base4 in r["arms"]]
        n4 = sum(_better(r["arms"][arm]["test"], r["arms"][base4]["test"], mode) for r in vs4)
        compute = np.mean([r["arms"][arm]["compute"] for r in got])
        lines.append(f"| {arm} | {len(got)} | {_fmt(test.mean(), test.std())} | {val.mean():.4f} | "
                     f"{sel.mean():.4f} | {np.mean(val - test):+.4f} | {n_worse}/{len(worse)} | "
                     f"{n4}/{len(vs4)} | {compute:.0f} ({compute / one_x:.2f}) |")
    return "\n".join(lines)


def per_seed_table(rows, arms):
    """Markdown: test metric of every arm, one line per seed."""
    arms = [a for a in arms if any(a in row["arms"] for row in rows)]
    lines = ["| seed | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for row in rows:
        cells = [f"{row['arms'][a]['test']:.3f}" if a in row["arms"] else "-" for a in arms]
        lines.append(f"| {row['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_test(rows, arm):
    """Mean test metric of `arm` over the rows that have it (None if none)."""
    got = [row["arms"][arm]["test"] for row in rows if arm in row["arms"]]
    return float(np.mean(got)) if got else None


def goal_table(rows, arms, mode, against, base1="random 1x", max_below=1):
    """Markdown: issue 19's goals, one line per PBT arm.

    Each arm's mean test metric must be at least each arm of `against`'s
    (`"yes"`, else `"**no**"` with the gap), and the arm may be worse than
    `base1` in at most `max_below` seeds. Only seeds where both arms ran
    count; a baseline with no run reads `"-"`.

    Args:
        rows: per-seed rows, as for `arm_table`.
        arms: the PBT arms to judge.
        mode: `"max"` or `"min"`.
        against: baseline arms whose mean each arm must match or beat.
        base1: the arm compared seed by seed.
        max_below: seeds allowed below `base1`.
    """
    head = ["arm", "mean test"] + [f">= {b} ({_num(mean_test(rows, b))})" for b in against]
    head.append(f"worse than {base1} in <= {max_below} seeds")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for arm in arms:
        mine = mean_test(rows, arm)
        if mine is None:
            continue
        cells = [arm, f"{mine:.4f}"]
        for b in against:
            both = [r for r in rows if arm in r["arms"] and b in r["arms"]]
            if not both:
                cells.append("-")
                continue
            a = np.mean([r["arms"][arm]["test"] for r in both])
            o = np.mean([r["arms"][b]["test"] for r in both])
            cells.append("yes" if _better(a, o, mode) else f"**no** ({a - o:+.4f})")
        both = [r for r in rows if arm in r["arms"] and base1 in r["arms"]]
        below = sum(not _better(r["arms"][arm]["test"], r["arms"][base1]["test"], mode)
                    for r in both)
        cells.append(f"{'yes' if below <= max_below else '**no**'} ({below}/{len(both)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value):
    return "-" if value is None else f"{value:.4f}"


def diagnosis(rows, runs):
    """Markdown: for each PBT run, whether the best configuration alone was
    replaced, and the distinct lines alive at each boundary (mean over seeds)."""
    lines = ["| run | best-alone config replaced (seeds) | at boundary (mean) | its line "
             "survives to the end (seeds) | distinct lines alive per boundary (mean) | std "
             "log10 lr, first -> last boundary |", "|---|---|---|---|---|---|"]
    for run in runs:
        replaced, at, survives, alive, spread, n, known = 0, [], 0, [], [], 0, 0
        for row in rows:
            info = row["runs"].get(run)
            if info is None or not info["per_interval"]:
                continue
            n += 1
            best = row.get("best_alone")  # None until random search 1x has run
            if best is not None:
                known += 1
                k = info["replaced"].get(best)
                if k is not None:
                    replaced += 1
                    at.append(k)
                survives += best in info["per_interval"][-1]["roots"]
            div = diversity(info)
            alive.append([d[0] for d in div])
            spread.append((div[0][1], div[-1][1]))
        if not n:
            continue
        width = max(map(len, alive))
        alive_mean = " ".join(f"{np.mean([a[i] for a in alive if i < len(a)]):.1f}"
                              for i in range(width))
        s0, s1 = np.nanmean([s[0] for s in spread]), np.nanmean([s[1] for s in spread])
        lines.append(f"| {run} | {replaced}/{known} | {np.mean(at) if at else float('nan'):.1f} | "
                     f"{survives}/{known} | {alive_mean} | {s0:.2f} -> {s1:.2f} |")
    return "\n".join(lines)


def time_table(times):
    """Markdown: per piece, seeds, mean and total wall seconds.

    Args:
        times: dict piece -> list of seconds (one per seed).
    """
    lines = ["| piece | seeds | mean s per seed | total s |", "|---|---|---|---|"]
    for piece, values in times.items():
        if values:
            lines.append(f"| {piece} | {len(values)} | {np.mean(values):.0f} | "
                         f"{np.sum(values):.0f} |")
    return "\n".join(lines)
