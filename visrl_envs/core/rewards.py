"""Pure image and text metrics used by the rewards of every family.

Images are uint8 ``HxWx3`` arrays (or float arrays in [0, 1]); every function returns a plain float.
Reference implementations come from scikit-image; :class:`TargetSimilarity` computes the same SSIM
faster by caching the target's statistics (it is checked against scikit-image in the tests), because
a per-step reward must not cost several times the render it scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import canny
from skimage.metrics import structural_similarity

#: ITU-R BT.709 luma weights, as ``skimage.color.rgb2gray``.
LUMA = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
SSIM_WINDOW = 7
_SSIM_C1 = (0.01 * 1.0) ** 2
_SSIM_C2 = (0.03 * 1.0) ** 2


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float input is returned as float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return image.astype(np.float32, copy=False)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luma in [0, 1] (float32) of an RGB image; a 2-D image is returned as unit floats."""
    unit = to_unit(image)
    return unit if unit.ndim == 2 else unit @ LUMA


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error on [0, 1] intensities."""
    diff = to_unit(a) - to_unit(b)
    return float(np.mean(diff * diff))


def psnr(a: np.ndarray, b: np.ndarray, cap: float = 100.0) -> float:
    """Peak signal-to-noise ratio in dB (data range 1), capped at ``cap`` for identical images."""
    err = mse(a, b)
    return cap if err <= 10 ** (-cap / 10) else float(-10 * np.log10(err))


def pixel_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - RMSE`` on [0, 1] intensities: 1 for identical images, 0 for black vs white."""
    return float(1.0 - np.sqrt(mse(a, b)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Grayscale SSIM (scikit-image defaults: 7x7 uniform window, sample covariance), in [-1, 1]."""
    return float(structural_similarity(to_gray(a), to_gray(b), data_range=1.0, win_size=SSIM_WINDOW))


def canny_edges(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Boolean Canny edge map of the image's luma (scikit-image, thresholds 0.1 / 0.2)."""
    return canny(to_gray(image), sigma=sigma, low_threshold=0.1, high_threshold=0.2)


def edge_iou(edges_a: np.ndarray, edges_b: np.ndarray, tolerance: int = 1) -> float:
    """IoU of two edge maps after dilating each by ``tolerance`` pixels; 1 when both are empty."""
    if tolerance > 0:
        size = 2 * tolerance + 1
        edges_a = ndimage.maximum_filter(edges_a, size=size)
        edges_b = ndimage.maximum_filter(edges_b, size=size)
    union = np.count_nonzero(edges_a | edges_b)
    return 1.0 if union == 0 else float(np.count_nonzero(edges_a & edges_b) / union)


def length_score(length: int, reference: int) -> float:
    """Code-length term in [0, 1]: 1 up to the reference length, falling linearly to 0 at twice it.

    RLRF rewards ``-|len(pred) - len(ref)|``; this keeps its intent (do not pad the program) without
    penalising a shorter program that draws the same picture.
    """
    if reference <= 0:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - max(0, length - reference) / reference)))


def format_gate(valid: bool, value: float, penalty: float) -> float:
    """``value`` when the action was well-formed, else the (negative) format ``penalty``."""
    return float(value) if valid else float(penalty)


@dataclass(frozen=True)
class SimilarityWeights:
    """Weights of the image-similarity terms; they are normalised to sum to 1."""

    pixel: float = 0.3
    ssim: float = 0.4
    edge: float = 0.3

    def normalised(self) -> tuple[float, float, float]:
        total = self.pixel + self.ssim + self.edge
        if total <= 0 or min(self.pixel, self.ssim, self.edge) < 0:
            raise ValueError("similarity weights must be >= 0 with a positive sum")
        return self.pixel / total, self.ssim / total, self.edge / total


class TargetSimilarity:
    """Similarity of candidate images to one fixed target, with the target's statistics cached.

    ``terms(candidate)`` returns ``pixel`` (:func:`pixel_similarity`), ``ssim`` (:func:`ssim` clipped to
    [0, 1]), ``edge`` (:func:`edge_iou` of Canny maps) and their weighted sum ``similarity``; all in
    [0, 1], all 1 for the target itself.
    """

    def __init__(self, target: np.ndarray, weights: SimilarityWeights | None = None) -> None:
        self.weights = weights or SimilarityWeights()
        self._w = self.weights.normalised()
        self.target = np.ascontiguousarray(target)
        self._target_unit = to_unit(self.target)
        gray = to_gray(self.target).astype(np.float64)
        self._gray = gray
        self._mu_t = ndimage.uniform_filter(gray, SSIM_WINDOW)
        self._var_t = ndimage.uniform_filter(gray * gray, SSIM_WINDOW) - self._mu_t**2
        self._edges_t = ndimage.maximum_filter(canny_edges(self.target), size=3)

    def ssim(self, candidate: np.ndarray) -> float:
        """Same value as :func:`ssim` (unclipped), reusing the target's window statistics."""
        x = to_gray(candidate).astype(np.float64)
        y = self._gray
        n = SSIM_WINDOW**2
        cov_norm = n / (n - 1)
        mu_x = ndimage.uniform_filter(x, SSIM_WINDOW)
        vx = cov_norm * (ndimage.uniform_filter(x * x, SSIM_WINDOW) - mu_x * mu_x)
        vxy = cov_norm * (ndimage.uniform_filter(x * y, SSIM_WINDOW) - mu_x * self._mu_t)
        vy = cov_norm * self._var_t
        num = (2 * mu_x * self._mu_t + _SSIM_C1) * (2 * vxy + _SSIM_C2)
        den = (mu_x * mu_x + self._mu_t * self._mu_t + _SSIM_C1) * (vx + vy + _SSIM_C2)
        pad = (SSIM_WINDOW - 1) // 2
        s = num / den
        return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))

    def edge(self, candidate: np.ndarray) -> float:
        edges = ndimage.maximum_filter(canny_edges(candidate), size=3)
        return edge_iou(edges, self._edges_t, tolerance=0)

    def terms(self, candidate: np.ndarray) -> dict[str, float]:
        if candidate.shape != self.target.shape:
            raise ValueError(f"candidate shape {candidate.shape} != target shape {self.target.shape}")
        diff = to_unit(candidate) - self._target_unit
        pixel = float(1.0 - np.sqrt(np.mean(diff * diff)))
        ssim_value = min(1.0, max(0.0, self.ssim(candidate)))
        edge = self.edge(candidate)
        wp, ws, we = self._w
        return {
            "pixel": pixel,
            "ssim": ssim_value,
            "edge": edge,
            "similarity": wp * pixel + ws * ssim_value + we * edge,
        }
