"""The numba kernels of ``ml.aggregate``, compiled once and cached on disk.

They live at module level: numba keys its on-disk cache by the function's
source file and qualified name, and a kernel defined inside a function (a
closure over other dispatchers) missed the cache in every process, paying a
fresh compile (~2 s) per ``din aggregate``. Imported only by
``ml.aggregate._kernels``, after it has set ``NUMBA_CACHE_DIR``.
"""

import numba
import numpy as np

SCALE = 1048576.0  # 2^20: ml.aggregate.SCALE_BITS (checked there)
QMAX = 1073741824.0  # 2^30: ml.aggregate.Q_MAX


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", inline="always")
def q(w, n):
    d = np.float64(w)
    y = d * SCALE
    y = y if y < QMAX else QMAX
    y = y if y > -QMAX else -QMAX
    return np.rint(y) * n + (d - d)


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def accumulate(acc, w, n):
    for i in range(acc.shape[0]):
        acc[i] += q(w[i], n)


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def accumulate4(acc, w0, w1, w2, w3, n0, n1, n2, n3):
    # integers below 2^53: the grouping of these additions cannot change the sum
    for i in range(acc.shape[0]):
        acc[i] += (q(w0[i], n0) + q(w1[i], n1)) + (q(w2[i], n2) + q(w3[i], n3))


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def accumulate2(acc, w0, w1, n0, n1):
    for i in range(acc.shape[0]):
        acc[i] += q(w0[i], n0) + q(w1[i], n1)


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def accumulate3(acc, w0, w1, w2, n0, n1, n2):
    for i in range(acc.shape[0]):
        acc[i] += (q(w0[i], n0) + q(w1[i], n1)) + q(w2[i], n2)


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def finalize(acc, out, divisor):
    bad = 0
    for i in range(acc.shape[0]):
        v = acc[i]
        bad |= v != v
        out[i] = np.float32(v / divisor)
        acc[i] = 0.0
    return bad != 0
