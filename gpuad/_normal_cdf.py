"""The standard normal CDF (host) and inverse CDF (device) for ``gpuad.random.truncated_normal``.

The inverse is computed with ``+ - * /``, ``sqrt`` and comparisons only, so it
is bit-identical on every array library (NOTE in ``gpuad.random``).
"""

from __future__ import annotations

import math

# --- the standard normal's CDF (host) and inverse CDF (device) ----------------------------
#: truncated_normal refuses intervals beyond +-_TAIL_LIMIT: Phi(-35) = 1.1e-268
#: keeps every uniform it inverts a normal float64 (no subnormal, no zero).
_TAIL_LIMIT = 35.0
_TINY64 = 2.2250738585072014e-308  # the smallest normal float64

# Wichura, "Algorithm AS 241: the percentage points of the normal
# distribution", Applied Statistics 37 (1988) 477-484 (PPND16, relative
# accuracy about 1e-16).  Coefficients from the lowest degree up.
_AS241_A = (3.3871328727963666080e0, 1.3314166789178437745e+2, 1.9715909503065514427e+3,
            1.3731693765509461125e+4, 4.5921953931549871457e+4, 6.7265770927008700853e+4,
            3.3430575583588128105e+4, 2.5090809287301226727e+3)
_AS241_B = (1.0, 4.2313330701600911252e+1, 6.8718700749205790830e+2, 5.3941960214247511077e+3,
            2.1213794301586595867e+4, 3.9307895800092710610e+4, 2.8729085735721942674e+4,
            5.2264952788528545610e+3)
_AS241_C = (1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0,
            3.64784832476320460504e0, 1.27045825245236838258e0, 2.41780725177450611770e-1,
            2.27238449892691845833e-2, 7.74545014278341407640e-4)
_AS241_D = (1.0, 2.05319162663775882187e0, 1.67638483018380384940e0, 6.89767334985100004550e-1,
            1.48103976427480074590e-1, 1.51986665636164571966e-2, 5.47593808499534494600e-4,
            1.05075007164441684324e-9)
_AS241_E = (6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0,
            2.96560571828504891230e-1, 2.65321895265761230930e-2, 1.24266094738807843860e-3,
            2.71155556874348757815e-5, 2.01033439929228813265e-7)
_AS241_F = (1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
            7.86869131145613259100e-4, 1.84631831751005468180e-5, 1.42151175831644588870e-7,
            2.04426310338993978564e-15)

# fdlibm's e_log.c (Sun Microsystems, 1993): log(1 + f) on [sqrt(2)/2 - 1, sqrt(2) - 1], error < 1 ulp.
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01, 2.222219843214978396e-01,
       1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10


def _ndtr(x):
    """The standard normal CDF of the Python float ``x`` (host; accurate in the lower tail)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _horner(coeffs, r):
    acc = coeffs[-1] * r + coeffs[-2]
    for c in coeffs[-3::-1]:
        acc = acc * r + c
    return acc


def _log64(xp, t):
    """``log(t)`` for float64 ``t`` in ``[2**-1022, 1]`` with ``+ - * /`` and comparisons only.

    Every step is correctly rounded under IEEE 754, so the result is the same
    on every backend (a library's own ``log`` may differ in the last place).
    """
    m, k = t, xp.zeros_like(t)
    for s in (512, 256, 128, 64, 32, 16, 8, 4, 2, 1):  # m * 2**-k = t, exact
        small = m < 2.0 ** (1 - s)
        m = xp.where(small, m * 2.0 ** s, m)
        k = xp.where(small, k - s, k)
    big = m > 1.4142135623730951                    # m in [1, 2) -> [sqrt(2)/2, sqrt(2)]
    m = xp.where(big, m * 0.5, m)
    k = xp.where(big, k + 1.0, k)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    t2 = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + t2 + t1) + k * _LN2_LO)) - f)


def _ndtri(xp, p):
    """The standard normal inverse CDF of float64 ``p`` in ``(0, 1)`` (AS 241; ``+ - * /``, ``sqrt``)."""
    q = p - 0.5
    rc = 0.180625 - q * q
    central = q * _horner(_AS241_A, rc) / _horner(_AS241_B, rc)
    r = xp.sqrt(-_log64(xp, xp.maximum(xp.minimum(p, 1.0 - p), _TINY64)))
    rm, rt = r - 1.6, r - 5.0
    tail = xp.where(r <= 5.0, _horner(_AS241_C, rm) / _horner(_AS241_D, rm),
                    _horner(_AS241_E, rt) / _horner(_AS241_F, rt))
    tail = xp.where(q < 0.0, -tail, tail)
    return xp.where(xp.abs(q) <= 0.425, central, tail)
