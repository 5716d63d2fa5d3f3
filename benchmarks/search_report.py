"""Tables and diagnosis of the search-quality benchmark (pure NumPy).

`search_quality.py` produces, per task and seed, a row: each arm's chosen
model's accuracy on val / select / test, and for each PBT run its lineage
summary. This module turns rows into the markdown that goes into
`benchmarks/RESULTS.md`.
"""

import math

import numpy as np


def choose_random(results):
    """Random search's choice: the best mean accuracy on val and select
    together (all the held-out data it may use; ties: the first drawn)."""
    best = max(range(len(results)),
               key=lambda i: (results[i]["val"] + results[i]["select"], -i))
    return results[best]


def lineage_summary(lineage, size, intervals):
    """Roots and hyperparameters per boundary, from a PBT run's lineage.

    Returns:
        dict with `roots` (list per boundary of each member's initial
        configuration index, after that boundary's decisions), `replaced`
        (member -> first boundary at which its own weights were replaced, or
        None), `hparams` (list per boundary of each member's hyperparameters).
    """
    roots = {m: m for m in range(size)}
    hparams = {}
    replaced = {m: None for m in range(size)}
    per_interval = []
    by_interval = {}
    for r in lineage:
        if r.action == "init":
            hparams[r.member_id] = dict(r.hparams)
        elif r.interval:
            by_interval.setdefault(r.interval, []).append(r)
    for k in range(1, intervals + 1):
        old = dict(roots)
        for r in by_interval.get(k, []):
            if r.action in ("exploit", "restart") and r.parent is not None:
                roots[r.member_id] = old[r.parent]
                if replaced[r.member_id] is None:
                    replaced[r.member_id] = k
            hparams[r.member_id] = dict(r.hparams)
        per_interval.append({"roots": [roots[m] for m in range(size)],
                             "hparams": [dict(hparams[m]) for m in range(size)]})
    return {"per_interval": per_interval, "replaced": replaced}


def diversity(summary, name="learning_rate"):
    """Per boundary: distinct initial configurations alive, and the standard
    deviation of log10 of hyperparameter `name` across members."""
    out = []
    for entry in summary["per_interval"]:
        values = [h.get(name) for h in entry["hparams"]]
        spread = (float(np.std(np.log10(values)))
                  if all(isinstance(v, float) and v > 0 for v in values) else math.nan)
        out.append((len(set(entry["roots"])), spread))
    return out


def _fmt(mean, std):
    return f"{mean:.4f} +- {std:.4f}"


def arm_table(rows, arms, baseline1, baseline4):
    """Markdown: per arm, test mean +- std, val, select, val-test gap, wins."""
    lines = ["| arm | test (mean +- std) | val (ranked on) | select | val - test | "
             f">= {baseline1} (seeds) | >= {baseline4} (seeds) |", "|---|---|---|---|---|---|---|"]
    for arm in arms:
        got = [row["arms"][arm] for row in rows if arm in row["arms"]]
        if not got:
            continue
        test = np.array([g["test"] for g in got])
        val = np.array([g["val"] for g in got])
        sel = np.array([g["select"] for g in got])
        wins1 = sum(row["arms"][arm]["test"] >= row["arms"][baseline1]["test"] for row in rows)
        wins4 = sum(row["arms"][arm]["test"] >= row["arms"][baseline4]["test"] for row in rows)
        lines.append(f"| {arm} | {_fmt(test.mean(), test.std())} | {val.mean():.4f} | "
                     f"{sel.mean():.4f} | {np.mean(val - test):+.4f} | {wins1}/{len(rows)} | "
                     f"{wins4}/{len(rows)} |")
    return "\n".join(lines)


def per_seed_table(rows, arms):
    header = "| seed | " + " | ".join(arms) + " |"
    lines = [header, "|---|" + "---|" * len(arms)]
    for row in rows:
        cells = [f"{row['arms'][a]['test']:.3f}" if a in row["arms"] else "-" for a in arms]
        lines.append(f"| {row['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnosis(rows, runs):
    """Markdown: for each PBT run, whether the best configuration alone was
    replaced, and how fast diversity collapsed."""
    lines = ["| run | best-alone config replaced (seeds) | at boundary (mean) | "
             "its line survives to the end (seeds) | distinct lines alive per boundary (mean) | "
             "std log10 lr, first -> last boundary |", "|---|---|---|---|---|---|"]
    for run in runs:
        replaced, at, survives, alive, spread = 0, [], 0, [], []
        for row in rows:
            if run not in row["runs"]:
                continue
            info = row["runs"][run]
            best = row["best_alone"]
            k = info["replaced"].get(str(best), info["replaced"].get(best))
            if k is not None:
                replaced += 1
                at.append(k)
            if best in info["per_interval"][-1]["roots"]:
                survives += 1
            div = diversity(info)
            alive.append([d[0] for d in div])
            spread.append((div[0][1], div[-1][1]))
        n = sum(run in row["runs"] for row in rows)
        if not n:
            continue
        alive_mean = " ".join(f"{v:.1f}" for v in np.mean(alive, axis=0))
        s0, s1 = np.nanmean([s[0] for s in spread]), np.nanmean([s[1] for s in spread])
        lines.append(f"| {run} | {replaced}/{n} | {np.mean(at) if at else float('nan'):.1f} | "
                     f"{survives}/{n} | {alive_mean} | {s0:.2f} -> {s1:.2f} |")
    return "\n".join(lines)
