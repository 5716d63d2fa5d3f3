"""How long the PBT lineage tab takes for large populations, in headless Chromium.

Writes synthetic populations (64 members x 50 and x 200 boundaries, the shapes
of `tests/test_tensorboard_plugin_browser.py`) with the real summary writer,
serves them with a `tensorboard` subprocess on 127.0.0.1 and, for each, times
(median over `--rounds`):

* `route`: the `lineage` route alone (reading every record, the best member,
  ranking, ancestry and schedule computed by `keras_pbt.core.ancestry`), over HTTP;
* `tab`: from choosing the experiment in the tab to the drawn tab (fetch,
  parse, draw the tree, the schedules and the table).

With `--baseline <source tree>`, a second `tensorboard` serves the same logdir
with another version of keras-pbt and its tab, and the table gives the ratios.

The browser test checks what the tab draws; this script is where its speed is
measured. Needs Debian's chromium (`/usr/bin/chromium`) and Playwright.

    python benchmarks/lineage_tab.py [--rounds 3] [--boundaries 50 200]
    git archive 2e1596d keras_pbt tensorboard_plugin | tar -x -C /tmp/old
    python benchmarks/lineage_tab.py --baseline /tmp/old
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import pbt_logdir  # noqa: E402
# The browser test's chromium flags, tab locator and port helper.
from test_tensorboard_plugin_browser import CHROMIUM_ARGS, TAB, _free_port  # noqa: E402

MEMBERS = 64


def _get(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


def _serve(logdir, src):
    """A `tensorboard` subprocess whose keras-pbt (and plugin) come from `src`."""
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [src, os.path.join(src, "tensorboard_plugin")] + env.get("PYTHONPATH", "").split(os.pathsep))
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return proc, f"http://127.0.0.1:{port}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--boundaries", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--baseline", help="a source tree of another keras-pbt version "
                        "(e.g. `git archive <commit> | tar -x -C /tmp/old`), served side by side")
    args = parser.parse_args()
    import json

    from playwright.sync_api import sync_playwright

    logdir = tempfile.mkdtemp(prefix="lineage_tab_bench_")
    names, counts = [], {}
    for b in args.boundaries:
        name = f"pop_{MEMBERS}x{b}"
        records = pbt_logdir.write_synthetic_population(os.path.join(logdir, name), MEMBERS, b)
        names.append(name)
        counts[name] = sum(len(v) for v in records.values())
    versions = {"current": ROOT}
    if args.baseline:
        versions["baseline"] = os.path.abspath(args.baseline)
    servers = {v: _serve(logdir, src) for v, src in versions.items()}

    def route(base, name):
        return _get(f"{base}/data/plugin/pbt_lineage/lineage?experiment={urllib.parse.quote(name)}")

    route_s = {(v, n): [] for v in versions for n in names}
    tab_s = {(v, n): [] for v in versions for n in names}
    size = {}
    try:
        deadline = time.time() + 600
        for v, (proc, base) in servers.items():
            while True:
                try:
                    if all(len(json.loads(route(base, n))["records"]) == counts[n] for n in names):
                        break
                except OSError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit(f"tensorboard ({v}) did not load the logdir")
                time.sleep(0.5)
        # Rounds alternate between the versions, so a busy machine slows both alike.
        for _ in range(args.rounds):
            for v, (_, base) in servers.items():
                for n in names:
                    t0 = time.perf_counter()
                    size[v, n] = len(route(base, n))
                    route_s[v, n].append(time.perf_counter() - t0)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            frames = {}
            for v, (_, base) in servers.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/#pbt_lineage")
                frames[v] = page.frame_locator(TAB)
                frames[v].locator('.pbt-lineage[data-state="ready"]').wait_for(timeout=300000)
            for _ in range(args.rounds):
                for v, frame in frames.items():
                    for n in names:
                        t0 = time.perf_counter()
                        frame.locator("#experiment").select_option(n)
                        frame.locator(f'.pbt-lineage[data-state="ready"][data-experiment="{n}"]'
                                      ).wait_for(timeout=300000)
                        tab_s[v, n].append(time.perf_counter() - t0)
            browser.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(logdir, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# lineage tab, {datetime.date.today()}, {platform.node()} ({os.cpu_count()} CPUs, "
          f"load {load:.1f}), median of {args.rounds}")
    print(f"# python {' '.join(sys.argv)}")
    print("| population | records | version | JSON | route | tab (choose -> drawn) "
          "| route vs current | tab vs current |")
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        r0, t0 = statistics.median(route_s["current", n]), statistics.median(tab_s["current", n])
        for v in versions:
            r, t = statistics.median(route_s[v, n]), statistics.median(tab_s[v, n])
            print(f"| {n} | {counts[n]} | {v} | {size[v, n] / 1e6:.1f} MB | {r:.2f} s | {t:.2f} s "
                  f"| {r / r0:.2f}x | {t / t0:.2f}x |")


if __name__ == "__main__":
    main()
