# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Deterministic image degradations of growing strength (graded digits).

Every function works on float64 grey images in ``[0, 1]`` of shape
``(H, W)`` and uses only elementwise NumPy arithmetic and fixed-order sums
(no BLAS), so the same parameters give the same bytes on any machine with
the same NumPy. The random parameters are drawn by the caller from a legacy
``np.random.RandomState`` (NumPy's frozen stream).

The degradations, in the order :func:`degrade` applies them:

- **affine** (rotation, isotropic scale, translation about the image
  centre, bilinear resampling, zeros outside): the digit's pose varies, so
  a classifier can no longer rely on stroke positions;
- **clutter**: other digits of the same split, warped and shifted so they
  overlap the border of the frame, merged by ``max`` at a lower ink
  level; strokes that belong to another class compete with the digit's own;
- **occlusion**: a rectangle of the frame is erased (set to 0), removing
  part of the digit's strokes;
- **blur**: a separable Gaussian (edge clamp), which thins the contrast
  between strokes;
- **noise**: additive Gaussian noise, then clipping to ``[0, 1]``.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np


def affine(image: np.ndarray, angle: float, scale: float,
           shift: Tuple[float, float]) -> np.ndarray:
    """Rotate by ``angle`` degrees, scale and shift ``(dy, dx)`` pixels.

    Output pixel ``p`` samples the input at ``R(-angle) (p - c - t) / s + c``
    (``c`` the image centre) by bilinear interpolation; samples outside the
    input are 0.

    Args:
        image (np.ndarray): ``(H, W)`` float image.
        angle (float): Counter-clockwise rotation in degrees.
        scale (float): Isotropic scale (> 0).
        shift (tuple[float, float]): Translation ``(dy, dx)`` in pixels.

    Returns:
        np.ndarray: The warped ``(H, W)`` float64 image.
    """
    if scale <= 0:
        raise ValueError(f'scale must be positive, got {scale}')
    height, width = image.shape
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64),
                         np.arange(width, dtype=np.float64), indexing='ij')
    ys = ys - cy - shift[0]
    xs = xs - cx - shift[1]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    src_y = (cos * ys - sin * xs) / scale + cy
    src_x = (sin * ys + cos * xs) / scale + cx
    return _bilinear_sample(image.astype(np.float64), src_y, src_x)


def _bilinear_sample(image: np.ndarray, src_y: np.ndarray,
                     src_x: np.ndarray) -> np.ndarray:
    """Sample ``image`` at fractional positions, 0 outside the image."""
    height, width = image.shape
    y0 = np.floor(src_y).astype(np.int64)
    x0 = np.floor(src_x).astype(np.int64)
    fy = src_y - y0
    fx = src_x - x0
    out = np.zeros(src_y.shape, dtype=np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            values = image[np.clip(yy, 0, height - 1),
                           np.clip(xx, 0, width - 1)]
            out = out + np.where(inside, values, 0.0) * wy * wx
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge clamp; ``sigma=0`` is a copy.

    Args:
        image (np.ndarray): ``(H, W)`` float image.
        sigma (float): Standard deviation in pixels (>= 0).

    Returns:
        np.ndarray: The blurred float64 image.
    """
    if sigma < 0:
        raise ValueError(f'sigma must be >= 0, got {sigma}')
    image = image.astype(np.float64)
    if sigma == 0:
        return image.copy()
    radius = int(math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma)**2)
    taps = taps / taps.sum()
    for axis in (0, 1):
        size = image.shape[axis]
        padded = np.take(image, np.clip(np.arange(-radius, size + radius), 0,
                                        size - 1), axis=axis)
        out = np.zeros_like(image)
        for k, tap in enumerate(taps):
            out = out + tap * np.take(padded, np.arange(k, k + size),
                                      axis=axis)
        image = out
    return image


def occlude(image: np.ndarray, top: int, left: int, height: int,
            width: int) -> np.ndarray:
    """Erase (set to 0) the rectangle at ``(top, left)`` of the given size."""
    out = image.astype(np.float64).copy()
    top, left = max(top, 0), max(left, 0)
    out[top:max(top + height, 0), left:max(left + width, 0)] = 0
    return out


def degrade(image: np.ndarray,
            level: dict,
            rng: np.random.RandomState,
            others: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """Apply one difficulty level's degradations with parameters from ``rng``.

    The parameters are drawn in a fixed order (whether a degradation is off
    or not), so a level's images do not depend on another level's settings.

    Args:
        image (np.ndarray): ``(H, W)`` float image in ``[0, 1]``.
        level (dict): Strengths: ``rotate`` (max degrees), ``scale``
            (``(min, max)``), ``shift`` (max pixels), ``clutter`` (number of
            other digits), ``clutter_ink`` (their ink level), ``occlude``
            (``(min, max)`` side of the erased rectangle as a fraction of the
            image side, ``None`` for none), ``blur`` (sigma), ``noise``
            (standard deviation).
        rng (np.random.RandomState): Source of the random parameters.
        others (Sequence[np.ndarray], optional): Candidate clutter images
            (same shape); required when ``level['clutter'] > 0``.

    Returns:
        np.ndarray: The degraded ``(H, W)`` float64 image in ``[0, 1]``.
    """
    height, width = image.shape
    angle = rng.uniform(-1, 1) * level['rotate']
    scale = rng.uniform(*level['scale'])
    shift = rng.uniform(-1, 1, size=2) * level['shift']
    out = affine(image, angle, scale, (shift[0], shift[1]))

    for _ in range(level['clutter']):
        if not others:
            raise ValueError('clutter needs candidate images in `others`')
        other = others[rng.randint(len(others))]
        # a partner centred 0.55-0.8 of the frame away in a random direction:
        # it overlaps the frame's border, not the digit's centre
        direction = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0.55, 0.8) * height
        offset = (dist * math.sin(direction), dist * math.cos(direction))
        piece = affine(other, rng.uniform(-30, 30), rng.uniform(0.7, 1.0),
                       offset)
        out = np.maximum(out, level['clutter_ink'] * piece)

    side = rng.uniform(*(level['occlude'] or (0.0, 0.0)), size=2)
    corner = rng.uniform(0, 1, size=2)
    if level['occlude'] is not None:
        h, w = int(round(side[0] * height)), int(round(side[1] * width))
        top = int(round(corner[0] * (height - h)))
        left = int(round(corner[1] * (width - w)))
        out = occlude(out, top, left, h, w)

    out = gaussian_blur(out, level['blur'])
    noise = rng.standard_normal(size=image.shape)
    return np.clip(out + level['noise'] * noise, 0.0, 1.0)
