"""Statistics for selection without SciPy: Welch's t-test.

The Student-t distribution is computed from the regularized incomplete beta
function (Numerical Recipes' continued fraction), so no SciPy is needed.

Pure Python.
"""

import math


def betainc(a, b, x):
    """The regularized incomplete beta function `I_x(a, b)`.

    Evaluated with the continued fraction of Numerical Recipes (modified
    Lentz), using the symmetry `I_x(a, b) = 1 - I_{1-x}(b, a)` where that
    converges faster. Accurate to about 1e-14 for moderate `a`, `b`.

    Args:
        a, b: positive shape parameters.
        x: in `[0, 1]`.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"`a` and `b` must be positive. Received: a={a!r}, b={b!r}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"`x` must be in [0, 1]. Received: x={x!r}")
    if x == 0.0 or x == 1.0:
        return float(x)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a, b, x, max_iter=500, eps=1e-16):
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def student_t_sf(t, df):
    """`P(T > t)` for Student's t with `df` (> 0, may be fractional) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"`df` must be positive. Received: df={df!r}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def welch_ttest(a, b):
    """Welch's unequal-variances t-test of two samples.

    Args:
        a, b: sequences of at least two finite numbers each.

    Returns:
        `(t, p)`: the t statistic of `mean(a) - mean(b)` and the two-sided
        p-value, with the Welch-Satterthwaite degrees of freedom. Two
        constant samples give `p = 0` if their means differ, `1` if not.

    Example:

    >>> t, p = welch_ttest([1.0, 2.0, 3.0], [4.0, 5.0, 6.5])
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"Welch's t-test needs two values per sample. Received {len(a)} and {len(b)}."
        )
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se2 = va + vb
    if se2 == 0.0:
        return (0.0, 1.0) if ma == mb else (math.copysign(math.inf, ma - mb), 0.0)
    t = (ma - mb) / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return t, min(1.0, 2.0 * student_t_sf(abs(t), df))
