"""Pure metrics on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from visrl_envs.core.rewards import (
    SimilarityWeights,
    TargetSimilarity,
    canny_edges,
    dilate3,
    edge_iou,
    fast_canny,
    format_gate,
    length_score,
    mse,
    pixel_similarity,
    psnr,
    ssim,
    to_gray,
)


def test_mse_and_pixel_similarity_black_vs_white() -> None:
    black = np.zeros((4, 4, 3), np.uint8)
    white = np.full((4, 4, 3), 255, np.uint8)
    assert mse(black, white) == pytest.approx(1.0)
    assert pixel_similarity(black, white) == pytest.approx(0.0)
    assert pixel_similarity(white, white) == 1.0


def test_mse_on_floats() -> None:
    a = np.full((2, 2), 0.5, np.float32)
    b = np.full((2, 2), 0.25, np.float32)
    assert mse(a, b) == pytest.approx(0.0625)
    assert pixel_similarity(a, b) == pytest.approx(0.75)


def test_psnr() -> None:
    a = np.zeros((2, 2), np.float32)
    b = np.full((2, 2), 0.1, np.float32)  # mse 0.01 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, a) == 100.0


def test_gray_uses_bt709_weights() -> None:
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert to_gray(red)[0, 0] == pytest.approx(0.2125)


def test_ssim_identity_and_inverse() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(image, 255 - image) < 0


def test_edge_iou_hand_computed() -> None:
    a = np.zeros((5, 5), bool)
    b = np.zeros((5, 5), bool)
    a[2, 1] = a[2, 3] = True
    b[2, 1] = True
    assert edge_iou(a, b, tolerance=0) == pytest.approx(0.5)
    assert edge_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    # one pixel apart: 0 without tolerance, overlapping 3x3 blocks with it (6 shared of 12 in the union)
    c = np.zeros((7, 7), bool)
    d = np.zeros((7, 7), bool)
    c[3, 2] = True
    d[3, 3] = True
    assert edge_iou(c, d, tolerance=0) == 0.0
    assert edge_iou(c, d, tolerance=1) == pytest.approx(6 / 12)


@pytest.mark.parametrize(
    ("length", "reference", "expected"),
    [(100, 100, 1.0), (50, 100, 1.0), (150, 100, 0.5), (200, 100, 0.0), (900, 100, 0.0), (5, 0, 1.0)],
)
def test_length_score(length: int, reference: int, expected: float) -> None:
    assert length_score(length, reference) == pytest.approx(expected)


def test_format_gate() -> None:
    assert format_gate(True, 0.7, -0.1) == 0.7
    assert format_gate(False, 0.7, -0.1) == -0.1


def test_target_similarity_matches_skimage_ssim() -> None:
    rng = np.random.default_rng(1)
    for size in (64, 100):
        target = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        candidate = np.clip(target.astype(int) + rng.integers(-60, 60, target.shape), 0, 255).astype(np.uint8)
        assert TargetSimilarity(target).ssim(candidate) == pytest.approx(ssim(candidate, target), abs=1e-6)


def test_metric_size_box_averages_large_images() -> None:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)  # the same picture at 256 px
    other_small = np.clip(small.astype(int) + 40, 0, 255).astype(np.uint8)
    other_large = np.repeat(np.repeat(other_small, 2, axis=0), 2, axis=1)
    at_128 = TargetSimilarity(small).terms(other_small)
    at_256 = TargetSimilarity(large).terms(other_large)
    assert at_256 == pytest.approx(at_128, abs=1e-6)


def test_dilate3_matches_scipy() -> None:
    from scipy import ndimage

    mask = np.random.default_rng(4).random((33, 40)) > 0.93
    assert np.array_equal(dilate3(mask), ndimage.maximum_filter(mask, size=3))


def test_fast_canny_agrees_with_skimage_on_renders() -> None:
    from visrl_envs.envs.svg.generator import generate_svg
    from visrl_envs.envs.svg.raster import render_trusted

    agreement = []
    for seed in range(24):
        image = render_trusted(generate_svg(np.random.default_rng(seed), seed % 4), 128)
        ours = dilate3(fast_canny(to_gray(image)))
        reference = dilate3(canny_edges(image))
        agreement.append(edge_iou(ours, reference, tolerance=0))
    # measured over 40 renders: mean 0.96, minimum 0.75 (ties in non-maximum suppression on
    # axis-aligned edges, and scikit-image's interpolated suppression)
    assert np.mean(agreement) >= 0.93 and min(agreement) >= 0.7


def test_ssim_kernel_matches_skimage_on_renders() -> None:
    from visrl_envs.envs.svg.generator import generate_svg
    from visrl_envs.envs.svg.raster import render_trusted

    for seed in range(6):
        a = render_trusted(generate_svg(np.random.default_rng(seed), seed % 4), 64)
        b = render_trusted(generate_svg(np.random.default_rng(seed + 100), seed % 4), 64)
        assert TargetSimilarity(a).ssim(b) == pytest.approx(ssim(b, a), abs=1e-6)


def test_fast_canny_finds_a_square_outline() -> None:
    image = np.zeros((32, 32), np.float32)
    image[8:24, 8:24] = 1.0
    edges = fast_canny(image)
    assert edges[8:24, 7:9].any(axis=1).all() and edges[8:24, 23:25].any(axis=1).all()
    assert not edges[12:20, 12:20].any() and not edges[:4].any()


def test_target_similarity_of_target_is_one() -> None:
    rng = np.random.default_rng(2)
    target = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    terms = TargetSimilarity(target).terms(target)
    assert terms == {"pixel": 1.0, "ssim": pytest.approx(1.0), "edge": 1.0, "similarity": pytest.approx(1.0)}


def test_target_similarity_weighting() -> None:
    target = np.full((64, 64, 3), 255, np.uint8)
    target[16:48, 16:48] = 0
    blank = np.full_like(target, 255)
    t = TargetSimilarity(target, SimilarityWeights(pixel=1, ssim=0, edge=0)).terms(blank)
    # a quarter of the pixels differ by 1 -> RMSE 0.5
    assert t["pixel"] == pytest.approx(0.5)
    assert t["similarity"] == pytest.approx(0.5)
    assert t["edge"] == 0.0
    with pytest.raises(ValueError):
        SimilarityWeights(0, 0, 0).normalised()


def test_downsample_keeps_the_aspect_of_non_square_images() -> None:
    from visrl_envs.core.rewards import downsample

    image = np.zeros((2, 4, 3), dtype=np.uint8)
    image[:, :, 0] = [[0, 100, 200, 255], [100, 100, 0, 0]]
    small = downsample(image, 2)  # long side 4 -> 2: integer factor 2, 2x2 boxes averaged (rounded by PIL)
    assert small.shape == (1, 2, 3)
    assert np.allclose(small[0, :, 0], [75 / 255, 114 / 255])
    assert downsample(np.zeros((3, 5, 3), np.uint8), 2).shape == (1, 2, 3), "a box resize when no factor fits"
    assert downsample(np.zeros((30, 60, 3), np.uint8), 64).shape == (30, 60, 3), "small images pass"
