"""Regenerates docs/pbt_lineage.png: a demo PBT run shown in the lineage tab.

Trains 8 members on sklearn digits with `PBTCallback(logdir=...)` (threads,
one shared store), serves the logdir with `tensorboard` on 127.0.0.1 and
screenshots `/#pbt_lineage` with Debian's chromium through Playwright.

    .venv/bin/python docs/lineage_screenshot.py [--logdir runs/digits]
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train(logdir, members=8, epochs=10, seed=0):
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    import keras_pbt

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    xt, yt, xv, yv = x[:1400], y[:1400], x[1400:], y[1400:]
    store = keras_pbt.InMemoryStore(seed=seed, synchronous=True)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5),
             "momentum": keras_pbt.Uniform(0.0, 0.9)}
    rng = np.random.default_rng(seed)
    threads = []
    for member in range(members):
        hp = keras_pbt.sample_space(space, rng)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile(keras.optimizers.SGD(float(hp["learning_rate"]), momentum=float(hp["momentum"])),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        cb = keras_pbt.PBTCallback(store, member, space, policy=keras_pbt.Policy(quantile=0.25),
                                   initial_hparams=hp, logdir=logdir)
        threads.append(threading.Thread(target=model.fit, args=(xt, yt), kwargs=dict(
            validation_data=(xv, yv), epochs=epochs, batch_size=64, verbose=0, callbacks=[cb])))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return store.lineage()


def screenshot(logdir, out):
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/data/plugin/pbt_lineage/experiments", timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(6)  # let the data server finish its first load
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 1250})
            page.goto(f"{url}/#pbt_lineage")
            frame = page.frame_locator('iframe[src*="plugin_entry.html?name=pbt_lineage"]')
            frame.locator('.pbt-lineage[data-state="ready"]').wait_for(timeout=30000)
            arrow = frame.locator("path.exploit-arrow.on-best")
            if arrow.count():
                arrow.first.hover(force=True)
            page.screenshot(path=out)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/digits")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "pbt_lineage.png"))
    args = parser.parse_args()
    records = train(args.logdir)
    print(f"{len(records)} lineage records, {sum(r.is_exploit for r in records)} exploits")
    screenshot(args.logdir, args.out)
    print("wrote", args.out)
