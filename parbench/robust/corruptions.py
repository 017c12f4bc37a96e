"""Common corruptions as ImageNet-C defines them (Hendrycks & Dietterich, ICLR 2019), the ones surveillance
footage suffers, plus occlusion; five severities each, applied to the decoded image (after a person box is cut,
before the run's own resize), seeded per image so that every method sees the same corrupted pixels.

Written here from the published definitions and their severity tables (numpy, scipy and Pillow only), because
their reference packaging, `imagecorruptions` 1.1.2, no longer runs on NumPy 2 (its fog uses `np.float_`) and
pulls OpenCV's GUI build and scikit-image into every install. tests/test_robust.py checks these against that
package where it runs (the test extra installs it) and the tables against the paper's. Motion blur follows the
package's numpy kernel (ImageNet-C itself called ImageMagick through Wand), as the robustness literature since
has. Each function takes and returns an (H, W, 3) uint8 array; `rng` is a `np.random.RandomState`, drawn from
in the same order as the package draws from numpy's global one.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

# severity 1..5 -> parameters, as published
PARAMS: dict[str, list] = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],  # std of N(0, c) added to x in [0, 1]
    "shot_noise": [60, 25, 12, 5, 3],  # Poisson(x * c) / c
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],  # (radius, sigma), angle U(-45, 45)
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],  # (disk radius, alias blur sigma)
    "jpeg_compression": [25, 18, 15, 10, 7],  # JPEG quality
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],  # box-downscale factor, nearest upscale
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],  # added to V in HSV
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],  # (x - mean) * c + mean
    "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],  # (strength, fractal wibble decay)
    "occlusion": [0.1, 0.2, 0.3, 0.4, 0.5],  # area fraction of a seeded black box (random erasing)
}
CORRUPTIONS = tuple(PARAMS)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 255] floats to uint8 as the package hands them to PIL: clipped, truncated."""
    return np.uint8(np.clip(x, 0, 255))


def gaussian_noise(x: np.ndarray, c: float, rng) -> np.ndarray:
    f = x / 255.0
    return np.clip(f + rng.normal(size=f.shape, scale=c), 0, 1) * 255


def shot_noise(x: np.ndarray, c: float, rng) -> np.ndarray:
    f = x / 255.0
    return np.clip(rng.poisson(f * c) / float(c), 0, 1) * 255


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by (dx, dy) pixels, repeating the edge row/column into the vacated band."""
    out = img
    if dx:
        out = np.roll(out, dx, axis=1)
        if dx > 0:
            out[:, :dx] = out[:, dx : dx + 1]
        else:
            out[:, dx:] = out[:, dx - 1 : dx]
    if dy:
        out = np.roll(out, dy, axis=0)
        if dy > 0:
            out[:dy] = out[dy : dy + 1]
        else:
            out[dy:] = out[dy - 1 : dy]
    return out


def motion_blur(x: np.ndarray, c: tuple, rng) -> np.ndarray:
    radius, sigma = c
    angle = rng.uniform(-45, 45)
    width = 2 * radius + 1
    taps = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    taps /= taps.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    out = np.zeros(x.shape, np.float32)
    for i in range(width):  # a one-sided trail: the image at decreasing weights along the motion
        dy, dx = -math.ceil(i * py / hyp - 0.5), -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        out = out + taps[i] * _shift(x, dx, dy)
    return np.clip(out, 0, 255)


def _gauss_3x3(sigma: float) -> np.ndarray:
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_reflect101(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D correlation with reflect-101 borders (dcb|abcd|cba), channel by channel."""
    from scipy.ndimage import correlate

    return correlate(img, kernel, mode="mirror")


def defocus_blur(x: np.ndarray, c: tuple, rng) -> np.ndarray:
    radius, alias = c
    span = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(span, span)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    if radius <= 8:
        disk = _filter_reflect101(disk, _gauss_3x3(alias).astype(np.float32))  # the disk, antialiased
    else:
        g = np.exp(-(np.arange(-2, 3) ** 2) / (2 * alias**2))
        g /= g.sum()
        disk = _filter_reflect101(disk, np.outer(g, g).astype(np.float32))
    f = (x / 255.0).astype(np.float64)
    out = np.stack([_filter_reflect101(f[..., d], disk.astype(np.float64)) for d in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


def jpeg_compression(x: np.ndarray, c: int, rng) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=c)
    return np.asarray(Image.open(buf).convert("RGB"))


def pixelate(x: np.ndarray, c: float, rng) -> np.ndarray:
    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(v > 0, delta / v, 0.0)
        h = np.where(
            delta == 0,
            0.0,
            np.where(v == r, (g - b) / delta, np.where(v == g, 2.0 + (b - r) / delta, 4.0 + (r - g) / delta)),
        )
    h = (h / 6.0) % 1.0
    return np.stack([h, s, v], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def brightness(x: np.ndarray, c: float, rng) -> np.ndarray:
    hsv = _rgb_to_hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(_hsv_to_rgb(hsv), 0, 1) * 255


def contrast(x: np.ndarray, c: float, rng) -> np.ndarray:
    f = x / 255.0
    means = f.mean(axis=(0, 1), keepdims=True)
    return np.clip((f - means) * c + means, 0, 1) * 255


def _plasma(size: int, decay: float, rng) -> np.ndarray:
    """A diamond-square height map, size x size (a power of two), normalised to [0, 1]: the fog's density."""
    a = np.empty((size, size))
    a[0, 0] = 0
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = a[0:size:step, 0:size:step]
        acc = corners + np.roll(corners, -1, axis=0)
        acc = acc + np.roll(acc, -1, axis=1)
        a[half:size:step, half:size:step] = acc / 4 + wibble * rng.uniform(-wibble, wibble, acc.shape)
        # diamonds: the points between squares, from their four neighbours
        centres = a[half:size:step, half:size:step]
        lu = a[0:size:step, 0:size:step]
        ld = (centres + np.roll(centres, 1, axis=0)) + (lu + np.roll(lu, -1, axis=1))
        a[0:size:step, half:size:step] = ld / 4 + wibble * rng.uniform(-wibble, wibble, ld.shape)
        lt = (centres + np.roll(centres, 1, axis=1)) + (lu + np.roll(lu, -1, axis=0))
        a[half:size:step, 0:size:step] = lt / 4 + wibble * rng.uniform(-wibble, wibble, lt.shape)
        step //= 2
        wibble /= decay
    a -= a.min()
    return a / a.max()


def fog(x: np.ndarray, c: tuple, rng) -> np.ndarray:
    strength, decay = c
    h, w = x.shape[:2]
    size = 1 if max(h, w) == 0 else 2 ** (max(h, w) - 1).bit_length()
    f = x / 255.0
    top = f.max()
    f = f + strength * _plasma(size, decay, rng)[:h, :w, None]
    return np.clip(f * top / (top + strength), 0, 1) * 255


def occlusion(x: np.ndarray, c: float, rng) -> np.ndarray:
    """A black box covering fraction c of the image, aspect ratio drawn log-uniformly in [0.3, 3.3] (random
    erasing, Zhong et al. 2020; a box that does not fit is reshaped to keep its area), placed uniformly where it
    fits."""
    h, w = x.shape[:2]
    area = c * h * w
    ratio = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
    bh = int(min(h, max(1, round(math.sqrt(area * ratio)))))
    bw = int(max(1, round(area / bh)))
    if bw > w:  # too wide for the image: as wide as it, and taller, so the area stays c
        bw = w
        bh = int(min(h, max(1, round(area / bw))))
    top, left = rng.randint(0, h - bh + 1), rng.randint(0, w - bw + 1)
    out = x.copy()
    out[top : top + bh, left : left + bw] = 0
    return out


_FUNCS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
    "brightness": brightness,
    "contrast": contrast,
    "fog": fog,
    "occlusion": occlusion,
}


def corruption_seed(name: str, severity: int, image: int) -> int:
    """The per-image seed: the same for every method and run on that image, another for each corruption."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{name}|{severity}|{image}".encode()).digest()[:4], "little")


def corrupt(x: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """`x` (H, W, 3) uint8 under corruption `name` at severity 1..5 (0: unchanged), drawn from `seed`."""
    if name not in _FUNCS:
        from parbench.errors import ParbenchError

        raise ParbenchError("--corruptions", f"names among {', '.join(CORRUPTIONS)}", repr(name))
    if severity == 0:
        return x
    rng = np.random.RandomState(seed)
    return _to_uint8(_FUNCS[name](np.asarray(x, dtype=np.uint8), PARAMS[name][severity - 1], rng))
