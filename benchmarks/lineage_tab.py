"""How long the PBT lineage tab takes for large populations, in headless Chromium.

Writes synthetic populations (64 members x 50 and x 200 boundaries, the shapes
of `tests/test_tensorboard_plugin_browser.py`) with the real summary writer,
serves them with a `tensorboard` subprocess on 127.0.0.1 and, for each, times
(median over `--rounds`):

* `route`: the `lineage` route alone (reading every record, the best member,
  ranking, ancestry and schedule computed by `keras_pbt.schedule`), over HTTP;
* `tab`: from choosing the experiment in the tab to the drawn tab (fetch,
  parse, draw the tree, the schedules and the table).

The browser test checks what the tab draws; this script is where its speed is
measured. Needs Debian's chromium (`/usr/bin/chromium`) and Playwright.

    python benchmarks/lineage_tab.py [--rounds 3] [--boundaries 50 200]
"""

import argparse
import datetime
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import pbt_logdir  # noqa: E402

MEMBERS = 64
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TAB = 'iframe[src*="plugin_entry.html?name=pbt_lineage"]'


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--boundaries", type=int, nargs="+", default=[50, 200])
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    logdir = tempfile.mkdtemp(prefix="lineage_tab_bench_")
    names, counts = [], {}
    for b in args.boundaries:
        name = f"pop_{MEMBERS}x{b}"
        records = pbt_logdir.write_synthetic_population(os.path.join(logdir, name), MEMBERS, b)
        names.append(name)
        counts[name] = sum(len(v) for v in records.values())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import json

    def route(name):
        return _get(f"{base}/data/plugin/pbt_lineage/lineage?experiment={urllib.parse.quote(name)}")

    rows = []
    try:
        deadline = time.time() + 300
        while True:
            try:
                if all(len(json.loads(route(n))["records"]) == counts[n] for n in names):
                    break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("tensorboard did not load the logdir")
            time.sleep(0.5)
        route_s = {n: [] for n in names}
        size = {}
        for _ in range(args.rounds):
            for n in names:
                t0 = time.perf_counter()
                size[n] = len(route(n))
                route_s[n].append(time.perf_counter() - t0)
        tab_s = {n: [] for n in names}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/#pbt_lineage")
            frame = page.frame_locator(TAB)
            frame.locator('.pbt-lineage[data-state="ready"]').wait_for(timeout=120000)
            for _ in range(args.rounds):
                for n in names:
                    t0 = time.perf_counter()
                    frame.locator("#experiment").select_option(n)
                    frame.locator(f'.pbt-lineage[data-state="ready"][data-experiment="{n}"]').wait_for(
                        timeout=120000)
                    tab_s[n].append(time.perf_counter() - t0)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(logdir, ignore_errors=True)
    first = names[0]
    print(f"# lineage tab, {datetime.date.today()}, {platform.node()} ({os.cpu_count()} CPUs), "
          f"median of {args.rounds}")
    print(f"# python {' '.join(sys.argv)}")
    print("| population | records | JSON | route | tab (choose -> drawn) | tab vs first |")
    print("|---|---|---|---|---|---|")
    for n in names:
        r, t = statistics.median(route_s[n]), statistics.median(tab_s[n])
        rows.append((n, r, t))
        ratio = t / statistics.median(tab_s[first])
        print(f"| {n} | {counts[n]} | {size[n] / 1e6:.1f} MB | {r:.2f} s | {t:.2f} s | {ratio:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
