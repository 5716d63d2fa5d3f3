"""The phases of benchmarks/gpu_check.py: each `phase_<name>(ctx)` returns a dict.

`ctx` holds `mode` (`"gpu"` or `"cpu"`) and `devices` (the logical device
names the phase may use). Phases run on Keras' TensorFlow backend, or on JAX
without TensorFlow (`KERAS_BACKEND=jax`): there a member has one device, so
the MirroredStrategy phases are skipped, and several members share each GPU. A phase returns `ok` (False: FAIL), `detail` (one
line for the table), optionally `status` (e.g. `"SKIP"`), `goal` (`"met"`,
`"NOT MET"` or `"n/a"`) and `data` (numbers for the JSON file). Sizes are a
GPU's where `mode` is `"gpu"` and tiny on CPU.
"""

import os
import statistics
import threading
import time

# Keras' backend: TensorFlow (the default), or JAX on a machine without
# TensorFlow (`KERAS_BACKEND=jax make gpu-check`).
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
TF_ONLY = "TensorFlow only (MirroredStrategy): KERAS_BACKEND=" + BACKEND


def sync(*trees):
    """Waits for the device work behind `trees` (JAX), or for every device (TF)."""
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(trees)
        return
    import tensorflow as tf

    tf.test.experimental.sync_devices()


def placed_on(name):
    """A context that places what is built or computed in it on device `name`."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.device(name)
    import keras

    return keras.device(name)


def _jax_device(name):
    import jax

    return next(d for d in jax.devices(name.split(":")[0]) if f"{d.platform}:{d.id}" == name)


def phase_devices(ctx):
    import numpy as np

    a = np.arange(64, dtype=np.float32).reshape(8, 8)
    if BACKEND == "jax":
        import jax

        for d in ctx["devices"]:
            got = np.asarray(jax.device_put(a, _jax_device(d)) @ jax.device_put(a, _jax_device(d)))
            np.testing.assert_allclose(got, a @ a, rtol=1e-3)
        gpus = jax.devices("gpu") if jax.default_backend() == "gpu" else []
        text = (f"{len(gpus)} GPU(s) {[g.device_kind for g in gpus]}, members on {ctx['devices']}"
                if gpus else f"no GPU: {len(ctx['devices'])} CPU devices")
        return {"detail": text + f"; JAX {jax.__version__}, no TensorFlow"}
    import tensorflow as tf

    for d in ctx["devices"]:
        with tf.device(d):
            got = tf.matmul(tf.constant(a), tf.constant(a)).numpy()
        np.testing.assert_allclose(got, a @ a, rtol=1e-3)  # TF32 matmuls on recent GPUs
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", "?") for g in gpus]
    text = (f"{len(gpus)} physical GPU(s) {names}, logical {ctx['devices']}" if gpus
            else f"no GPU: {len(ctx['devices'])} logical CPU devices")
    return {"detail": text + f"; TF {tf.__version__}"}


def _mlp_data(n, d, classes=10, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(0, 1.5, (classes, d))
    return (centers[y] + rng.normal(0, 1, (n, d))).astype("float32"), y


def _rate_callback(rates, member_id, steps):
    import keras

    class Rate(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t = []

        def on_epoch_end(self, epoch, logs=None):
            self.t.append(time.perf_counter())
            if len(self.t) > 1:  # the first epoch traces: not counted
                rates[member_id] = steps * (len(self.t) - 1) / (self.t[-1] - self.t[0])
    return [Rate()]


def _population(ctx, cross, devices=None, per_member=2):
    import keras
    import numpy as np

    import keras_pbt
    from keras_pbt.population import devices as devices_lib

    gpu = ctx["mode"] == "gpu"
    width, batch, steps, epochs = (1024, 256, 40, 3) if gpu else (32, 32, 4, 2)
    x, y = _mlp_data(steps * batch, 64)
    xv, yv = _mlp_data(2 * batch, 64, seed=1)

    def build(hp):
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(width, activation="relu"),
                                  keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10)])
        model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    original = devices_lib.member_strategy
    if cross == "nccl":
        import tensorflow as tf

        devices_lib.member_strategy = lambda devs: tf.distribute.MirroredStrategy(
            devices=list(devs), cross_device_ops=tf.distribute.NcclAllReduce())
    try:
        pop = keras_pbt.Population(build, {"learning_rate": keras_pbt.LogUniform(1e-3, 1e-1)},
                                   population_size=4, seed=0,
                                   devices=keras_pbt.Devices(names=devices or ctx["devices"],
                                                             per_member=per_member))
        pop.store.timeout = 60
        rates = {}
        pop.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=batch,
                callbacks=lambda mid: _rate_callback(rates, mid, steps), verbose=0)
    finally:
        devices_lib.member_strategy = original
    failures = {m.member_id: [str(e) for e in m.failures] for m in pop.members if m.failures}
    losses = [v for m in pop.members for v in m.history.get("loss", [])]
    ok = not failures and len(losses) == 4 * epochs and np.all(np.isfinite(losses))
    slices = sorted({tuple(m.devices) for m in pop.members})
    detail = (f"4 members on {slices}; steps/s per member "
              f"{ {k: round(v, 1) for k, v in sorted(rates.items())} }; "
              f"exploits {sum(r.action == 'exploit' for r in pop.lineage)}")
    return {"ok": ok, "detail": detail + (f"; failures {failures}" if failures else ""),
            "data": {"rates": rates, "failures": failures}}


def phase_population_reduce(ctx):
    if BACKEND != "tensorflow":
        return {"status": "SKIP", "detail": TF_ONLY}
    return _population(ctx, "reduce")


def phase_population_nccl(ctx):
    if BACKEND != "tensorflow":
        return {"status": "SKIP", "detail": TF_ONLY}
    if ctx["mode"] != "gpu":
        return {"status": "SKIP", "detail": "no GPU: NCCL needs GPUs"}
    return _population(ctx, "nccl")


def phase_population_shared(ctx):
    """4 members of one device each, all on the first device (one GPU shared)."""
    return _population(ctx, "none", devices=ctx["devices"][:1], per_member=1)


# The next-step check's reference: one weight `y = w * x`, MSE, SGD, batch 1,
# its hyperparameters switched after SWITCH steps. A copy of the SGD case of
# tests/test_hyperparameters.reference (a benchmark does not import tests).
_X = ((1.0,), (-0.5,), (2.0,), (0.7,), (-1.3,), (1.1,), (0.4,), (-0.8,))
_Y = ((0.3,), (0.9,), (-0.4,), (1.2,), (0.1,), (-0.6,), (0.8,), (0.2,))
_W0 = 0.5
SWITCH = 3


def sgd_reference(hp_before, hp_after, switch=SWITCH):
    """The weight after each step under Keras' SGD rules, in float64."""
    import numpy as np

    w, m, out = _W0, 0.0, []
    for i, ((x,), (y,)) in enumerate(zip(_X, _Y)):
        hp = hp_before if i < switch else hp_after
        g = 2.0 * (w * x - y) * x
        lr, mom = hp["learning_rate"], hp.get("momentum", 0.0)
        if mom:
            m = m * mom - g * lr
            w = w + m
        else:
            w = w - g * lr
        out.append(w)
    return np.array(out)


def _switch_run(optimizer, name, value, jit):
    """Trains the one-weight model one epoch, applying `name=value` with
    `HyperparameterApplier` after SWITCH steps; the weight after every step."""
    import keras
    import numpy as np

    from keras_pbt.runtime.hyperparameters import HyperparameterApplier

    class Switch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_train_begin(self, logs=None):
            self.applier = HyperparameterApplier(self.model, [name])

        def on_train_batch_end(self, batch, logs=None):
            self.weights.append(float(self.model.layers[-1].kernel.numpy()[0, 0]))
            if batch + 1 == SWITCH:
                self.applier.apply({name: value})

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer=keras.initializers.Constant(_W0))])
    model.compile(optimizer, "mse")
    model.jit_compile = jit
    switch = Switch()
    model.fit(np.array(_X, "float32"), np.array(_Y, "float32"), batch_size=1, epochs=1,
              shuffle=False, verbose=0, callbacks=[switch])
    return np.array(switch.weights)


def phase_next_step(ctx):
    """Learning rate and momentum switched after step 3: every later weight
    equals `sgd_reference`, and the very next one differs from the stale
    update."""
    import keras
    import numpy as np

    # The reference is float64: no TF32 rounding of float32 matmuls on GPUs
    # (the tolerance still allows for it where XLA does not follow the flag).
    if BACKEND == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    else:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    base = {"learning_rate": 0.2, "momentum": 0.1}
    rows, ok = [], True
    for policy, jit in (("mixed_float16", False), ("float32", True), ("mixed_float16", True)):
        for name, new in (("learning_rate", 0.05), ("momentum", 0.9)):
            keras.mixed_precision.set_global_policy(policy)
            try:
                opt = keras.optimizers.SGD(**base)
                if policy == "mixed_float16":  # a small scale: batch-1 gradients stay finite in float16
                    opt = keras.optimizers.LossScaleOptimizer(opt, initial_scale=128.0)
                got = _switch_run(opt, name, new, jit)
            finally:
                keras.mixed_precision.set_global_policy("float32")
            want = sgd_reference(base, dict(base, **{name: new}))
            stale = sgd_reference(base, base)
            tol = 5e-3 if policy == "mixed_float16" else 1e-3 if ctx["mode"] == "gpu" else 1e-5
            err = float(np.max(np.abs(got - want)))
            gap = abs(float(got[SWITCH] - stale[SWITCH]))
            scale_kept = policy != "mixed_float16" or float(opt.dynamic_scale.numpy()) == 128.0
            good = err <= tol and gap > 10 * tol and scale_kept
            ok = ok and good
            rows.append(f"{policy}{'+jit' if jit else ''} {name}: {'ok' if good else 'WRONG'} "
                        f"(max err {err:.1e}, next-step gap {gap:.3f})")
    return {"ok": ok, "detail": "; ".join(rows)}


def _wide_model(params_millions):
    import keras

    width = 1024 if params_millions <= 20 else 4096 if params_millions <= 200 else 8192
    layers = max(1, round(params_millions * 1e6 / (width * width)))
    model = keras.Sequential([keras.Input((width,))] + [keras.layers.Dense(width) for _ in range(layers)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.optimizer.build(model.trainable_variables)
    return model


def _timed(fn, repeats, wait=None):
    """Median seconds of `fn()` and its device work (`wait()` returns what to
    wait for; by default what `fn` returned)."""
    times, out = [], None
    for _ in range(repeats):
        out = None
        t = time.perf_counter()
        out = fn()
        sync(_arrays(wait() if wait else out))
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _arrays(x):
    """What to wait for: a snapshot's arrays, a model's variable values, or `x`."""
    if hasattr(x, "optimizer") and hasattr(x, "weights") and not hasattr(x, "layers"):
        return list(x.weights) + list(x.optimizer)
    if hasattr(x, "layers"):
        return [v.value for v in x.weights + x.optimizer.variables]
    return x


def _device_copy_reference(device, nbytes, repeats):
    """The device's own copy bandwidth over the same bytes, in buffers of at
    most 256 MB, and the time of an alias (no copy) of them."""
    chunk = min(nbytes // 4, 64 * 2**20)
    count = max(1, nbytes // 4 // chunk)
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        with jax.default_device(_jax_device(device)):
            bufs = [jnp.ones([chunk], jnp.float32) for _ in range(count)]
            copy, _ = _timed(lambda: [jnp.array(x, copy=True) for x in bufs], repeats)
            alias, _ = _timed(lambda: [x for x in bufs], repeats)
    else:
        import tensorflow as tf

        with tf.device(device):
            bufs = [tf.ones([chunk], tf.float32) for _ in range(count)]
            copy, _ = _timed(lambda: [tf.raw_ops.Snapshot(input=x) for x in bufs], repeats)
            alias, _ = _timed(lambda: [tf.identity(x) for x in bufs], repeats)
    return 4 * chunk * count / copy, alias


def phase_exploit_copy(ctx):
    import gc

    from keras_pbt.runtime import snapshot

    gpu = ctx["mode"] == "gpu"
    sizes, repeats = ([10, 100, 1000], 3) if gpu else ([0.2, 1], 2)
    devs = ctx["devices"]
    rows, ok, goal = [], True, None
    for size in sizes:
        with placed_on(devs[0]):
            a = _wide_model(size)
        with placed_on(devs[1 % len(devs)]):
            b = _wide_model(size)
        want = snapshot.capture(a, "a", 0, on_device=False).checksum()
        own = snapshot.capture(b, "b", 0, on_device=False)  # b's own weights, to start each path from
        fractions = {}
        for path, on_device in (("device", True), ("host", False)):
            snapshot.restore(b, own)
            ok = ok and snapshot.capture(b, "b", 0, on_device=False).checksum() != want
            n = repeats if on_device or size < 1000 else 1  # 12 GB through the host once is enough
            cap, snap = _timed(lambda: snapshot.capture(a, "a", 0, on_device=on_device), n)
            res, _ = _timed(lambda: snapshot.restore(b, snap), n, wait=lambda: _arrays(b))
            nbytes = snap.nbytes
            ok = ok and snapshot.capture(b, "b", 0, on_device=False).checksum() == want
            del snap
            fractions[path] = 2 * nbytes / (cap + res)
        del own
        # The device's own copy bandwidth, on the last device.
        ref, alias = _device_copy_reference(devs[-1], nbytes, repeats)
        del a, b
        gc.collect()
        frac = fractions["device"] / ref
        if gpu and size == 100:
            goal = "met" if frac >= 0.5 else "NOT MET"
        rows.append(f"{size:g}M ({nbytes / 1e9:.2f} GB): device {fractions['device'] / 1e9:.1f} GB/s "
                    f"= {frac:.0%} of copy {ref / 1e9:.1f} GB/s, host {fractions['host'] / 1e9:.1f} GB/s "
                    f"= {fractions['host'] / ref:.0%} (alias {alias * 1e3:.2f} ms: no copy)")
    return {"ok": ok, "detail": "; ".join(rows), "goal": goal or "n/a"}


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def phase_memory(ctx):
    import gc
    import weakref

    import keras
    import numpy as np

    import keras_pbt

    gpu = ctx["mode"] == "gpu"
    width, batch, steps = (2048, 128, 10) if gpu else (256, 32, 3)
    width = int(os.environ.get("GPU_CHECK_MEMORY_WIDTH", width))  # two widths give the slope
    x, y = _mlp_data(steps * batch, 64)

    def build(hp):
        model = keras.Sequential([keras.Input((64,))] + [keras.layers.Dense(width, activation="relu")
                                                         for _ in range(3)] + [keras.layers.Dense(10)])
        model.compile(keras.optimizers.Adam(hp["learning_rate"]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    gc.collect()
    device_base = _device_memory(ctx, reset=True) if gpu else 0
    base = _rss()
    members, epochs = (8, 3) if gpu else (4, 2)  # tiny on CPU: the smoke path checks it runs
    pop = keras_pbt.Population(build, {"learning_rate": keras_pbt.LogUniform(1e-4, 1e-1)},
                               population_size=members, policy=keras_pbt.Policy(quantile=0.25),
                               devices=ctx["devices"], seed=0)
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                for m in pop.members for v in m.model.weights + m.model.optimizer.variables)
    published, most = [], {}
    publish = pop.store.publish

    def counting_publish(snap):
        publish(snap)
        published.append(weakref.ref(snap))
        alive = sum(1 for r in published if r() is not None and r().member_id == snap.member_id)
        most[snap.member_id] = max(most.get(snap.member_id, 0), alive)

    pop.store.publish = counting_publish
    peak, done = [base], threading.Event()

    def sample():
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        pop.fit(x, y, validation_data=(x[:batch], y[:batch]), epochs=epochs, batch_size=batch, verbose=0)
    finally:
        done.set()
        sampler.join(5)
    gc.collect()
    alive = [r() for r in published if r() is not None]
    in_store = {m: pop.store.snapshot(m) for m in pop.store.snapshot_members()}
    leftover = [s for s in alive if in_store.get(s.member_id) is not s]
    ok = bool(published) and not leftover and not sampler.is_alive()
    detail = (f"{members} members, state {state / 1e6:.1f} MB; host peak +{(peak[0] - base) / 1e6:.1f} MB "
              f"= {(peak[0] - base) / state:.2f}x state; published {len(published)}, most alive per "
              f"member {max(most.values(), default=0)}, alive after fit {len(alive)} (store holds "
              f"{len(in_store)}), stale {len(leftover)}")
    data = {"state_bytes": state, "host_peak_bytes": peak[0] - base, "most_alive": max(most.values(), default=0)}
    if gpu:
        dev_peak = _device_memory(ctx) - device_base
        detail += (f"; device peak {dev_peak / 1e6:.1f} MB = {dev_peak / state:.2f}x state, "
                   f"{dev_peak / members / 1e6:.1f} MB per member")
        data["device_peak_bytes"] = dev_peak
    return {"ok": ok, "detail": detail, "data": data}


def _device_memory(ctx, reset=False):
    """Peak device bytes over the phase's devices (TF resets the peak; JAX
    cannot: its peak since start, the memory phase runs first)."""
    if BACKEND == "jax":
        stats = [_jax_device(d).memory_stats() or {} for d in ctx["devices"]]
        key = "bytes_in_use" if reset else "peak_bytes_in_use"
        return sum(s.get(key, 0) for s in stats)
    import tensorflow as tf

    if reset:
        for d in ctx["devices"]:
            tf.config.experimental.reset_memory_stats(d)
        return 0
    return sum(tf.config.experimental.get_memory_info(d)["peak"] for d in ctx["devices"])


def _resnet(hp, size, filters):
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    h = layers.Conv2D(filters, 3, padding="same", activation="relu")(inp)
    for _ in range(2):
        r = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        r = layers.Activation("relu")(layers.BatchNormalization()(r))
        r = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(r))
        h = layers.Activation("relu")(layers.add([h, r]))
    out = layers.Dense(10)(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(hp["learning_rate"], momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def phase_overhead(ctx):
    import numpy as np

    import keras_pbt
    from keras_pbt.population import data as data_lib
    from keras_pbt.population import devices as devices_lib

    gpu = ctx["mode"] == "gpu"
    members, size, filters, batch, steps, epochs, repeats = (
        (4, 32, 64, 128, 30, 4, 2) if gpu else (2, 8, 4, 16, 3, 2, 1))
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (steps * batch, size, size, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int64") + 2 * (x[:, 0, 0, 0] > 0)
    xv, yv = x[:batch], y[:batch]

    def population(seed):
        return keras_pbt.Population(lambda hp: _resnet(hp, size, filters),
                                    {"learning_rate": keras_pbt.LogUniform(1e-3, 1e-1)},
                                    population_size=members, devices=ctx["devices"], seed=seed)

    def plain(seed):  # the same members, data pipelines and devices, no PBT
        pop = population(seed)
        n_steps, vsteps, _ = data_lib.check_fit_arguments(x, y, (xv, yv), batch, True, 1024, {})
        inputs = [(data_lib.member_pipeline(m.strategy, x, y, batch_size=batch, seed=m.seed),
                   n_steps, data_lib.validation_pipeline(m.strategy, (xv, yv), batch), vsteps)
                  for m in pop.members]
        def fit(m, i):
            with devices_lib.fit_scope(m.strategy):  # the member's device (JAX, PyTorch)
                m.model.fit(i[0], steps_per_epoch=i[1], validation_data=i[2], validation_steps=i[3],
                            epochs=epochs, verbose=0, shuffle=False)

        threads = [threading.Thread(target=fit, args=(m, i)) for m, i in zip(pop.members, inputs)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(600)
        return time.perf_counter() - t

    def pbt(seed):
        pop = population(seed)
        t = time.perf_counter()
        pop.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=batch, verbose=0)
        return time.perf_counter() - t

    if gpu:
        plain(99)  # warm-up: thread pools, autotuning
    plains, pbts = [], []
    for r in range(repeats):  # alternate which arm runs first
        for arm in ((plain, pbt) if r % 2 == 0 else (pbt, plain)):
            (plains if arm is plain else pbts).append(arm(r))
    ratio = statistics.median(pbts) / statistics.median(plains)
    detail = (f"{members} members, ResNet {size}x{size}x{filters}, {epochs} epochs x {steps} steps: no PBT "
              f"{[round(v, 2) for v in plains]} s, PBT {[round(v, 2) for v in pbts]} s, ratio {ratio:.3f}")
    return {"detail": detail, "goal": ("met" if ratio <= 1.05 else "NOT MET") if gpu else "n/a",
            "data": {"ratio": ratio}}
