"""PB2: explore by a Gaussian-process bandit instead of random perturbation.

Population-Based Bandits (Parker-Holder et al., NeurIPS 2020) keeps PBT's
exploit and replaces its explore: the data are, for every member and
interval, the hyperparameters it trained with and how much its metric
changed over the interval; a Gaussian process with a time-varying kernel
models that change, and the loser takes the hyperparameters that maximise
an upper confidence bound (UCB) at the current time.

Here:

* inputs are the hyperparameters mapped to `[0, 1]` (log scale for
  `LogUniform` and log `IntUniform`, the index for `Choice`) and the
  boundary index `t`;
* the target is the change `metric - start_metric` of each report (the
  start is the previous report's metric, or the parent's after an exploit),
  signed so that larger is better, and standardised;
* the kernel is `exp(-|x - x'|^2 / (2 l^2)) * (1 - eps)^(|t - t'| / 2)`
  (PB2's time-varying squared exponential); `l`, `eps` and the noise are
  chosen on a small grid by the log marginal likelihood;
* the new point maximises `mean + kappa * std` over random candidates in
  the box and around the parent, and is mapped back to the space (rounded
  for integers and choices, clipped to the bounds).

With fewer than `min_data` usable reports, it resamples from the space, as
PB2 starts. Pure NumPy; no scikit-learn needed.
"""

import math

import numpy as np

from keras_pbt.core import space as space_lib
from keras_pbt.core.selection import is_finite
from keras_pbt.core.validation import check_int

_LENGTHS = (0.1, 0.2, 0.35, 0.6, 1.0)
_EPSILONS = (0.0, 0.05, 0.2)
_NOISES = (0.01, 0.1, 0.5)


def encode(value, spec):
    """A hyperparameter value mapped into `[0, 1]`."""
    if isinstance(spec, space_lib.Choice):
        n = len(spec.values)
        return spec.index(spec.clip(value)) / (n - 1) if n > 1 else 0.5
    low, high = float(spec.low), float(spec.high)
    value = float(value)
    if isinstance(spec, space_lib.LogUniform) or getattr(spec, "log", False):
        low, high, value = math.log(low), math.log(high), math.log(max(value, spec.low))
    return min(max((value - low) / (high - low), 0.0), 1.0)


def decode(u, spec):
    """The space's value at `u` in `[0, 1]` (rounded and clipped by the spec)."""
    u = min(max(float(u), 0.0), 1.0)
    if isinstance(spec, space_lib.Choice):
        return spec.values[int(round(u * (len(spec.values) - 1)))]
    low, high = float(spec.low), float(spec.high)
    if isinstance(spec, space_lib.LogUniform) or getattr(spec, "log", False):
        return spec.clip(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return spec.clip(low + u * (high - low))


def _kernel(xa, ta, xb, tb, length, eps):
    d2 = ((xa[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2.0 * length * length))
    if eps > 0:
        k = k * (1.0 - eps) ** (np.abs(ta[:, None] - tb[None, :]) / 2.0)
    return k


def fit_gp(x, t, y):
    """Chooses the kernel by marginal likelihood; returns a predict function.

    Args:
        x: array (n, d) of inputs in `[0, 1]`.
        t: array (n,) of boundary indices.
        y: array (n,) of standardised targets.

    Returns:
        `(predict, params)`: `predict(xq, tq) -> (mean, std)` and the chosen
        `(length, eps, noise)`.
    """
    best = None
    for length in _LENGTHS:
        for eps in _EPSILONS:
            k = _kernel(x, t, x, t, length, eps)
            for noise in _NOISES:
                try:
                    chol = np.linalg.cholesky(k + noise * np.eye(len(y)))
                except np.linalg.LinAlgError:
                    continue
                alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
                loglik = -0.5 * y @ alpha - np.log(np.diag(chol)).sum()
                if best is None or loglik > best[0]:
                    best = (loglik, length, eps, noise, chol, alpha)
    _, length, eps, noise, chol, alpha = best

    def predict(xq, tq):
        ks = _kernel(xq, tq, x, t, length, eps)
        mean = ks @ alpha
        v = np.linalg.solve(chol, ks.T)
        var = np.maximum(1.0 - (v * v).sum(0), 1e-12)
        return mean, np.sqrt(var)

    return predict, (length, eps, noise)


class PB2Explorer:
    """Chooses a loser's new hyperparameters with PB2's GP-UCB bandit.

    Give it to `PBTPolicy`, `PBTCallback` or `Population` as `explore=`
    (or `explore="pb2"` for the defaults). The policy passes it the reports
    of the whole run so far.

    Args:
        kappa: weight of the standard deviation in the UCB. Defaults to `1.0`.
        candidates: random candidates scored per decision. Defaults to `512`.
        window: only reports from the latest this many boundaries are data
            (PB2 models recent change). Defaults to `6`.
        min_data: fewest usable reports before the GP is used; below it, a
            value is resampled from the space. Defaults to `4`.

    Example:

    >>> import numpy as np
    >>> from keras_pbt.core.selection import Report
    >>> from keras_pbt.core.space import LogUniform
    >>> space = {"lr": LogUniform(1e-4, 1e-1)}
    >>> history = [Report(m, 10, 0.5 + 0.1 * m, {"lr": 10 ** -(4 - m)}, interval=1,
    ...                   start_metric=0.4) for m in range(4)]
    >>> hp, ops = PB2Explorer()({"lr": 1e-3}, space, np.random.default_rng(0),
    ...                          history=history, mode="max")
    >>> ops
    {'lr': 'pb2'}
    """

    uses_history = True

    def __init__(self, kappa=1.0, candidates=512, window=6, min_data=4):
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not (
                math.isfinite(kappa) and kappa >= 0):
            raise ValueError(f"`kappa` must be a finite number >= 0. Received: kappa={kappa!r}")
        self.kappa = float(kappa)
        self.candidates = check_int("candidates", candidates, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.min_data = check_int("min_data", min_data, minimum=2)

    def __repr__(self):
        return (f"PB2Explorer(kappa={self.kappa}, candidates={self.candidates}, "
                f"window={self.window}, min_data={self.min_data})")

    def data(self, history, space, mode):
        """`(x, t, y)` arrays from the usable reports of `history`."""
        usable = [r for r in history
                  if r.start_metric is not None and is_finite(r.metric)
                  and is_finite(r.start_metric) and set(space) <= set(r.hparams)]
        if usable:
            latest = max(r.interval for r in usable)
            usable = [r for r in usable if r.interval > latest - self.window]
        names = sorted(space)
        x = np.array([[encode(r.hparams[n], space[n]) for n in names] for r in usable],
                     dtype=float).reshape(len(usable), len(names))
        t = np.array([float(r.interval) for r in usable])
        sign = 1.0 if mode == "max" else -1.0
        y = np.array([sign * (r.metric - r.start_metric) for r in usable], dtype=float)
        return x, t, y

    def __call__(self, hparams, space, rng, history=None, mode="max"):
        """Returns `(new_hparams, ops)` like `Explorer`.

        Args:
            hparams: the parent's hyperparameters (kept for names not in `space`).
            space: dict name -> spec.
            rng: a `numpy.random.Generator` (candidates, fallback samples).
            history: `Report`s of every member so far.
            mode: `"max"` or `"min"`.
        """
        x, t, y = self.data(history or [], space, mode)
        new = dict(hparams)
        if len(y) < self.min_data:
            for name, spec in space.items():
                new[name] = spec.sample(rng)
            return new, {name: "resample (pb2: too little data)" for name in space}
        names = sorted(space)
        std = y.std()
        y = (y - y.mean()) / (std if std > 0 else 1.0)
        predict, _ = fit_gp(x, t, y)
        parent = np.array([encode(hparams[n], space[n]) for n in names])
        box = rng.random((self.candidates, len(names)))
        near = np.clip(parent + rng.normal(0.0, 0.1, (self.candidates // 4 + 1, len(names))), 0, 1)
        cands = np.concatenate([box, near])
        now = np.full(len(cands), t.max())
        mean, sd = predict(cands, now)
        best = cands[int(np.argmax(mean + self.kappa * sd))]
        for name, u in zip(names, best):
            new[name] = decode(u, space[name])
        return new, {name: "pb2" for name in names}


def get_explore(explore):
    """`"perturb"` -> None (the policy's perturb/resample `Explorer`),
    `"pb2"` -> `PB2Explorer()`, an explorer instance -> itself."""
    if explore == "perturb":
        return None
    if explore == "pb2":
        return PB2Explorer()
    if callable(explore) and not isinstance(explore, str):
        return explore
    raise ValueError(
        "`explore` must be 'perturb', 'pb2' or an explorer such as PB2Explorer(...). "
        f"Received: explore={explore!r}"
    )
