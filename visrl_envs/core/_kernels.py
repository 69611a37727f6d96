"""Compiled (numba) kernels for the per-step image reward.

Why hand-written loops: SSIM and Canny in numpy/scipy take dozens of full-image passes; on a 2-core
CPU they cost several times the render they score (see benchmarks/RESULTS.md). One fused pass each
in numba is 2-4x cheaper. The maths is scikit-image's (SSIM: 7x7 uniform window, sample covariance;
Canny: Gaussian, Sobel, non-maximum suppression, hysteresis) and the tests hold these kernels to
scikit-image's results. ``cache=True`` compiles once per install and loads in milliseconds after.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def ssim_mean(x: np.ndarray, y: np.ndarray, window: int, c1: float, c2: float) -> float:  # pragma: no cover
    """Mean SSIM of two float64 images over all fully-inside ``window`` x ``window`` windows."""
    h, w = x.shape
    vh = h - window + 1
    vw = w - window + 1
    sx = np.zeros((vh, w))
    sy = np.zeros((vh, w))
    sxx = np.zeros((vh, w))
    syy = np.zeros((vh, w))
    sxy = np.zeros((vh, w))
    for j in range(w):  # running sums down each column
        a = b = aa = bb = ab = 0.0
        for i in range(window):
            xi = x[i, j]
            yi = y[i, j]
            a += xi
            b += yi
            aa += xi * xi
            bb += yi * yi
            ab += xi * yi
        sx[0, j], sy[0, j], sxx[0, j], syy[0, j], sxy[0, j] = a, b, aa, bb, ab
        for i in range(1, vh):
            xo, yo = x[i - 1, j], y[i - 1, j]
            xn, yn = x[i + window - 1, j], y[i + window - 1, j]
            a += xn - xo
            b += yn - yo
            aa += xn * xn - xo * xo
            bb += yn * yn - yo * yo
            ab += xn * yn - xo * yo
            sx[i, j], sy[i, j], sxx[i, j], syy[i, j], sxy[i, j] = a, b, aa, bb, ab
    n = window * window
    inv = 1.0 / n
    cov = n / (n - 1.0)
    total = 0.0
    for i in range(vh):  # running sums along each row of column sums
        a = b = aa = bb = ab = 0.0
        for j in range(window):
            a += sx[i, j]
            b += sy[i, j]
            aa += sxx[i, j]
            bb += syy[i, j]
            ab += sxy[i, j]
        for j in range(vw):
            if j > 0:
                jo, jn = j - 1, j + window - 1
                a += sx[i, jn] - sx[i, jo]
                b += sy[i, jn] - sy[i, jo]
                aa += sxx[i, jn] - sxx[i, jo]
                bb += syy[i, jn] - syy[i, jo]
                ab += sxy[i, jn] - sxy[i, jo]
            mx = a * inv
            my = b * inv
            vx = cov * (aa * inv - mx * mx)
            vy = cov * (bb * inv - my * my)
            vxy = cov * (ab * inv - mx * my)
            total += ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return total / (vh * vw)


@njit(cache=True, nogil=True)
def gaussian_nearest(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Separable correlation with ``kernel`` along both axes, 'nearest' borders (float32)."""
    h, w = image.shape
    r = kernel.shape[0] // 2
    tmp = np.zeros((h, w), np.float32)
    for i in range(h):
        for k in range(-r, r + 1):
            src = min(max(i + k, 0), h - 1)
            c = kernel[k + r]
            for j in range(w):
                tmp[i, j] += c * image[src, j]
    out = np.zeros((h, w), np.float32)
    for i in range(h):
        for k in range(-r, r + 1):
            c = kernel[k + r]
            lo = max(0, -k)
            hi = min(w, w - k)
            for j in range(lo, hi):
                out[i, j] += c * tmp[i, j + k]
            for j in range(0, lo):
                out[i, j] += c * tmp[i, 0]
            for j in range(hi, w):
                out[i, j] += c * tmp[i, w - 1]
    return out


@njit(cache=True, nogil=True)
def canny(gray: np.ndarray, kernel: np.ndarray, low: float, high: float) -> np.ndarray:  # pragma: no cover
    """Canny edges: Gaussian blur, unnormalised Sobel, 4-direction non-maximum suppression,
    8-connected hysteresis between ``low`` and ``high``; nothing on the 1-px border."""
    h, w = gray.shape
    g = gaussian_nearest(gray, kernel)
    mag = np.zeros((h, w), np.float32)
    gxs = np.zeros((h, w), np.float32)
    gys = np.zeros((h, w), np.float32)
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            gx = (g[i - 1, j + 1] + 2 * g[i, j + 1] + g[i + 1, j + 1]) - (
                g[i - 1, j - 1] + 2 * g[i, j - 1] + g[i + 1, j - 1]
            )
            gy = (g[i + 1, j - 1] + 2 * g[i + 1, j] + g[i + 1, j + 1]) - (
                g[i - 1, j - 1] + 2 * g[i - 1, j] + g[i - 1, j + 1]
            )
            gxs[i, j] = gx
            gys[i, j] = gy
            mag[i, j] = np.sqrt(gx * gx + gy * gy)
    tan_22_5 = np.float32(0.41421356)
    state = np.zeros((h, w), np.uint8)  # 1 = weak, 2 = edge
    stack = np.empty(h * w, np.int64)
    top = 0
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            m = mag[i, j]
            if m < low:
                continue
            gx = gxs[i, j]
            gy = gys[i, j]
            ax = abs(gx)
            ay = abs(gy)
            if ay <= tan_22_5 * ax:  # gradient along x: compare left and right
                di, dj = 0, 1
            elif ax <= tan_22_5 * ay:
                di, dj = 1, 0
            elif gx * gy > 0:
                di, dj = 1, 1
            else:
                di, dj = 1, -1
            if m >= mag[i + di, j + dj] and m >= mag[i - di, j - dj]:
                if m >= high:
                    state[i, j] = 2
                    stack[top] = i * w + j
                    top += 1
                else:
                    state[i, j] = 1
    while top > 0:  # grow edges from strong pixels through 8-connected weak ones
        top -= 1
        p = stack[top]
        i = p // w
        j = p % w
        for di in range(-1, 2):
            for dj in range(-1, 2):
                ii = i + di
                jj = j + dj
                if 0 <= ii < h and 0 <= jj < w and state[ii, jj] == 1:
                    state[ii, jj] = 2
                    stack[top] = ii * w + jj
                    top += 1
    return state == 2
