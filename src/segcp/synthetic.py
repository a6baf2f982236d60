"""Built-in synthetic 2D "short-axis heart" phantoms, with model-like probability maps.

.. important::
   This is **synthetic data for demos and tests only**. It is a cartoon with roughly the
   look and statistics of a cardiac short-axis MRI slice and of a segmentation network's
   output. It is *not* a model of any real scanner, sequence, anatomy or network, and no
   result computed on it says anything about clinical performance.

``segcp demo`` uses :func:`make_phantoms` so that the whole pipeline (calibration,
prediction sets, metrics) runs with no data to download.

Each :class:`PhantomCase` holds

* ``image`` - a (H, W) float32 "MRI-like" magnitude image in [0, 1]: a torso ellipse with
  subcutaneous fat, textured soft tissue, dark lungs, spine and descending aorta, and a
  heart: a bright elliptical LV cavity (with papillary muscles) inside a dark myocardial
  ring, and a bright RV crescent beside it. Boundaries are ellipses whose radius is
  modulated by a few low-frequency Fourier terms. The image is blurred (partial volume),
  multiplied by a smooth bias field, corrupted by Rician magnitude noise and normalised.
* ``label`` - a (H, W) uint8 label map: 0 background, 1 RV cavity, 2 LV myocardium,
  3 LV cavity (papillary muscles are part of the cavity).
* ``probs`` - a (H, W) float32 foreground probability for the LV cavity (label 3) that
  imitates a trained but imperfect, over-confident network: the sigmoid of a signed
  distance to the true boundary, with boundary displacement errors that vary smoothly
  along the boundary (under- and over-segmentation), spatially correlated logit noise,
  occasional false-positive blobs on bright look-alike tissue (RV, aorta) and occasional
  partial misses (a sector of the cavity lost). About 95 % of pixels are within 1e-3 of
  0 or 1 and under 2 % lie in (0.1, 0.9).
  Over the default set the map thresholded at 0.5 has a mean Dice of about 0.85 against
  ``label == 3`` (empty-vs-empty counted as 1), with a tail of hard cases (apical slices,
  misses, false positives) well below.
* ``spacing`` - pixel spacing (row, column) in mm, constant per subject, in [1.2, 1.8].

Cases come in groups ("subjects") of ``slices_per_subject`` slices that share anatomy
(body, heart position, shape and orientation) and a subject-level model "difficulty", so
their errors are correlated: split calibration/test data by ``group``, never by case.

About 5 % of slices are apical-like (small or very small LV cavity) and about 2.5 % are
"beyond the apex" with no LV cavity at all (``label == 3`` empty), so empty-ground-truth
handling is exercised. With ``seed=0`` the default 200 cases contain several of each.

Every case is reproducible: subject ``k`` draws from ``default_rng((seed, 0, k))`` and
case ``i`` its scalars from ``default_rng((seed, 1, i))`` and its noise fields from
``default_rng((seed, 2, i))``, so a case never depends on ``n``:
``make_phantoms(n=10)[:5]`` equals ``make_phantoms(n=5)`` array for array (for the same
``shape`` and ``slices_per_subject``). The scalar parameters (anatomy, special cases,
the smooth part of the model's errors) do not depend on ``shape`` either; the noise
fields do.

Geometry is defined in pixels for a 128 x 128 reference and scaled with
``min(shape) / 128``; ``spacing`` is metadata (about 1.5 mm/pixel gives an adult-sized LV
cavity, 25-50 mm across at mid-ventricle). Only numpy and scipy.ndimage are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from segcp.errors import SegcpError

__all__ = ["LABELS", "PhantomCase", "make_phantoms", "phantom_samples"]

#: Label values used in :attr:`PhantomCase.label`.
LABELS: dict[int, str] = {0: "background", 1: "RV cavity", 2: "LV myocardium", 3: "LV cavity"}

# Per-slice rates of the special cases (drawn independently for every slice).
_P_EMPTY_LV = 0.025  # beyond the apex: no LV cavity (label 3 absent)
_P_APICAL = 0.05  # apical-like: LV cavity radius 15-50 % of the subject's mid value
_P_HARD = 0.05  # a badly calibrated / failed prediction (large global displacement, noise)
_P_PARTIAL_MISS = 0.08  # a sector of the LV cavity missed
_P_FALSE_POSITIVE = 0.12  # a false-positive blob on the RV or the aorta

_LOGIT_CAP = 14.0  # soft saturation of the model logit (keeps ordering, avoids exact 0/1)


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic 2D slice with its label map and a model-like LV probability map.

    Attributes:
        id: case identifier, ``"phantom_007"`` (zero-padded case index).
        group: subject identifier, ``"subject_003"``; the ``slices_per_subject`` cases of a
            subject share anatomy and model difficulty, so split data by group.
        image: (H, W) float32 in [0, 1], the MRI-like magnitude image (unitless).
        label: (H, W) uint8 label map, values in {0, 1, 2, 3}: 0 background, 1 RV cavity,
            2 LV myocardium, 3 LV cavity (may be absent: empty ground truth).
        probs: (H, W) float32 in [0, 1], model-like foreground probability of label 3.
        spacing: (row, column) pixel spacing in mm, each in [1.2, 1.8].

    Equality is identity (``eq=False``): compare arrays with ``np.array_equal``.
    """

    id: str
    group: str
    image: np.ndarray
    label: np.ndarray
    probs: np.ndarray
    spacing: tuple[float, float]


def make_phantoms(n: int = 200, shape: tuple[int, int] = (128, 128), seed: int = 0, slices_per_subject: int = 2) -> list[PhantomCase]:
    """Generate ``n`` synthetic short-axis-heart phantoms (see the module docstring).

    Args:
        n: number of cases (slices), >= 0. Case ``i`` belongs to subject
            ``i // slices_per_subject``; the last subject may have fewer slices when ``n``
            is not a multiple of ``slices_per_subject``.
        shape: (H, W) image size in pixels, each >= 32. Anatomy scales with ``min(shape)``.
        seed: non-negative integer; the same seed gives bit-identical cases.
        slices_per_subject: slices per subject (group), >= 1.

    Returns:
        A list of ``n`` :class:`PhantomCase` with ids ``phantom_000 ...`` and groups
        ``subject_000 ...``. About 8-10 ms per 128 x 128 case on one CPU core.

    Raises:
        SegcpError: on a negative ``n`` or ``seed``, a too small ``shape`` or
            ``slices_per_subject < 1``.
    """
    n = _as_int(n, "n", minimum=0)
    seed = _as_int(seed, "seed", minimum=0)
    sps = _as_int(slices_per_subject, "slices_per_subject", minimum=1)
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise SegcpError(f"shape must be a pair of integers (H, W), got {shape!r}") from None
    if h < 32 or w < 32:
        raise SegcpError(f"shape must be at least (32, 32), got {(h, w)}")

    grid = _Grid(h, w)
    cases: list[PhantomCase] = []
    subject: _Subject | None = None
    for i in range(n):
        k = i // sps
        if subject is None or subject.index != k:
            subject = _draw_subject(np.random.default_rng((seed, 0, k)), k, grid)
        # Scalars (anatomy, error pattern) and noise fields come from separate streams, so
        # a case's parameters do not depend on the image size.
        rng = np.random.default_rng((seed, 1, i))
        rng_fields = np.random.default_rng((seed, 2, i))
        image, label, probs = _render_case(rng, rng_fields, subject, grid)
        cases.append(PhantomCase(id=f"phantom_{i:03d}", group=f"subject_{k:03d}", image=image, label=label, probs=probs, spacing=subject.spacing))
    return cases


# --------------------------------------------------------------------------- internals


def _as_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SegcpError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SegcpError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# Angle-dependent quantities (boundary radii, displacements) are tabulated on a fine grid
# of angles and looked up per pixel: much cheaper than evaluating harmonics on the image.
_N_ANG = 1024
_ANG = np.arange(_N_ANG) * (2 * np.pi / _N_ANG) - np.pi


class _Grid:
    """Pixel coordinates (row y, column x) as float32 arrays, and the anatomy scale."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.scale = min(h, w) / 128.0

    def polar(self, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
        """Distance (pixels) to (cy, cx) and the index into ``_ANG`` of each pixel's angle."""
        dy, dx = self.yy - np.float32(cy), self.xx - np.float32(cx)
        phi = np.arctan2(dy, dx)
        ib = ((phi + np.float32(np.pi)) * np.float32(_N_ANG / (2 * np.pi)) + np.float32(0.5)).astype(np.intp)
        ib &= _N_ANG - 1  # nearest tabulated angle (_N_ANG is a power of two)
        return np.hypot(dy, dx), ib


def _harmonics(amps: np.ndarray, phases: np.ndarray, k0: int) -> np.ndarray:
    """Table over ``_ANG`` of sum_j amps[j] * cos((k0 + j) phi + phases[j])."""
    k = np.arange(k0, k0 + len(amps))[:, None]
    return (np.asarray(amps)[:, None] * np.cos(k * _ANG[None, :] + np.asarray(phases)[:, None])).sum(0)


@dataclass
class _Shape:
    """A closed star-shaped curve: rotated ellipse times (1 + Fourier modulation)."""

    cy: float
    cx: float
    a: float  # semi-axis along theta, pixels
    b: float  # semi-axis across theta, pixels
    theta: float
    amps: np.ndarray  # relative amplitudes of harmonics 2, 3, ...
    phases: np.ndarray

    def radius(self, phi: np.ndarray | float) -> np.ndarray:
        """Boundary radius (pixels) in direction(s) ``phi`` (radians), seen from (cy, cx)."""
        t = np.asarray(phi, dtype=np.float64) - self.theta
        r = (self.a * self.b) / np.sqrt((self.b * np.cos(t)) ** 2 + (self.a * np.sin(t)) ** 2)
        k = np.arange(2, 2 + len(self.amps)).reshape((-1,) + (1,) * np.ndim(phi))
        amps = np.asarray(self.amps).reshape(k.shape)
        phases = np.asarray(self.phases).reshape(k.shape)
        return r * (1.0 + (amps * np.cos(k * np.asarray(phi) + phases)).sum(0))

    def table(self) -> np.ndarray:
        """Boundary radius over ``_ANG``; index it with the ``ib`` of :meth:`_Grid.polar`."""
        return self.radius(_ANG).astype(np.float32)


def _random_shape(rng: np.random.Generator, cy: float, cx: float, r: float, ecc: float, theta: float, wobble: float) -> _Shape:
    amps = wobble * rng.uniform(0.3, 1.0, 4) / np.arange(1, 5)
    return _Shape(cy, cx, r * np.sqrt(ecc), r / np.sqrt(ecc), theta, amps, rng.uniform(0, 2 * np.pi, 4))


@dataclass
class _Subject:
    """Anatomy, acquisition and model-difficulty parameters shared by a subject's slices."""

    index: int
    spacing: tuple[float, float]
    body: np.ndarray  # (H, W) bool, inside the torso
    body_inner: np.ndarray  # (H, W) bool, inside the subcutaneous fat layer
    aorta: np.ndarray  # (H, W) bool, descending aorta (bright look-alike for false positives)
    background: np.ndarray  # (H, W) float64 noise-free signal of everything but the heart
    heart: tuple[float, float]
    lv: _Shape
    myo_thickness: float
    myo_amps: np.ndarray
    myo_phases: np.ndarray
    rv_dir: float
    rv_dist: float
    rv_along: float
    rv_across: float
    papillary: list[tuple[float, float]]  # (angle in rad, radius in pixels)
    noise_sigma: float
    bias: np.ndarray  # (H, W) float64 multiplicative bias field, about 0.7..1.3
    difficulty: float  # > 0, scales the model's boundary errors for all slices


def _draw_subject(rng: np.random.Generator, index: int, g: _Grid) -> _Subject:
    s = g.scale
    sp = round(float(rng.uniform(1.2, 1.8)), 3)
    spacing = (sp, round(float(np.clip(sp * rng.uniform(0.97, 1.03), 1.2, 1.8)), 3))

    # Torso with a subcutaneous fat layer.
    bcy, bcx = g.h / 2 + rng.normal(0, 2.5 * s), g.w / 2 + rng.normal(0, 2.5 * s)
    bax, bay = rng.uniform(0.41, 0.48) * g.w, rng.uniform(0.33, 0.41) * g.h
    body_shape = _Shape(bcy, bcx, bax, bay, rng.uniform(-0.12, 0.12), 0.025 * rng.uniform(0.3, 1, 4) / np.arange(1, 5), rng.uniform(0, 2 * np.pi, 4))
    rho_b, ib = g.polar(bcy, bcx)
    rb = body_shape.table()[ib]
    body = rho_b < rb
    body_inner = rho_b < rb - rng.uniform(2.5, 5.0) * s

    bg = np.zeros((g.h, g.w))
    bg[body] = 0.72  # fat
    bg[body_inner] = 0.36  # soft tissue
    m = min(bax, bay)
    for dy, dx, rel in ((0.05, -0.52, 0.47), (0.1, 0.58, 0.39)):  # right, left lung (image left, right)
        lung = _random_shape(
            rng, bcy + dy * bay, bcx + dx * bax, rel * m * rng.uniform(0.9, 1.15), rng.uniform(1.3, 1.8), np.pi / 2 + rng.normal(0, 0.2), 0.08
        )
        rl, ib = g.polar(lung.cy, lung.cx)
        bg[(rl < lung.table()[ib]) & body_inner] = 0.04
    scy, scx, sr = bcy + 0.74 * bay, bcx + rng.normal(0, 1.5 * s), rng.uniform(7, 9) * s
    d_sp = np.hypot(g.yy - scy, g.xx - scx)
    bg[(d_sp < sr) & body_inner] = 0.16  # cortical bone
    bg[(d_sp < sr - 1.5 * s) & body_inner] = 0.46  # vertebral body
    acy, acx = bcy + 0.5 * bay + rng.normal(0, 1.5 * s), bcx + 0.16 * bax + rng.normal(0, 2 * s)
    aorta = (np.hypot(g.yy - acy, g.xx - acx) < rng.uniform(3.5, 5.0) * s) & body_inner
    bg[aorta] = 0.86

    # Heart: LV cavity shape (mid-ventricular), myocardial thickness, RV placement.
    hcy = bcy - 0.08 * bay + rng.normal(0, 3 * s)
    hcx = bcx + 0.1 * bax + rng.normal(0, 3 * s)
    lv = _random_shape(rng, hcy, hcx, rng.uniform(11.0, 16.0) * s, rng.uniform(1.0, 1.35), rng.uniform(0, np.pi), 0.06)
    rv_dir = np.pi + rng.uniform(-0.25, 0.55)  # image left, slightly up (rows grow downwards)
    papillary = [(float(rv_dir + np.pi + rng.normal(0, 0.9)), rng.uniform(1.3, 2.2) * s) for _ in range(int(rng.integers(0, 3)))]

    # Smooth bias field: a random low-order polynomial, +-15..30 % over the field of view.
    yn, xn = (g.yy / g.h - 0.5) * 2, (g.xx / g.w - 0.5) * 2
    c = rng.normal(0, 1, 5)
    bias = c[0] * xn + c[1] * yn + 0.5 * c[2] * xn * yn + 0.5 * c[3] * xn**2 + 0.5 * c[4] * yn**2
    bias = 1.0 + rng.uniform(0.15, 0.3) * bias / max(float(np.abs(bias).max()), 1e-6)

    return _Subject(
        index=index,
        spacing=spacing,
        body=body,
        body_inner=body_inner,
        aorta=aorta,
        background=bg,
        heart=(hcy, hcx),
        lv=lv,
        myo_thickness=rng.uniform(5.0, 7.5) * s,
        myo_amps=rng.uniform(0.0, 0.12, 3) / np.arange(1, 4),
        myo_phases=rng.uniform(0, 2 * np.pi, 3),
        rv_dir=rv_dir,
        rv_dist=rng.uniform(0.3, 0.5),
        rv_along=rng.uniform(0.95, 1.15),
        rv_across=rng.uniform(1.15, 1.45),
        papillary=papillary,
        noise_sigma=rng.uniform(0.025, 0.06),
        bias=bias,
        difficulty=float(rng.lognormal(0.0, 0.35)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise smoothed with a Gaussian of ``sigma`` pixels."""
    z = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="reflect", truncate=3.0)
    return z / max(float(z.std()), 1e-12)


def _wave_field(rng: np.random.Generator, g: _Grid, wavelength: float, k: int = 10) -> np.ndarray:
    """Smooth random field, zero-mean and unit-std: a sum of ``k`` random plane waves.

    ``cos(fx x + fy y + p) = cos(fx x + p) cos(fy y) - sin(fx x + p) sin(fy y)``, so the sum
    is two small matrix products (much cheaper than a wide Gaussian filter).
    """
    ang = rng.uniform(0, 2 * np.pi, k)
    f = 2 * np.pi / wavelength * rng.uniform(0.5, 1.5, k)
    amp, ph = rng.normal(0, 1, k), rng.uniform(0, 2 * np.pi, k)
    y, x = np.arange(g.h, dtype=np.float64)[:, None], np.arange(g.w, dtype=np.float64)[:, None]
    fy, fx = f * np.sin(ang), f * np.cos(ang)
    field = (amp * np.cos(fy * y)) @ np.cos(fx * x + ph).T - (amp * np.sin(fy * y)) @ np.sin(fx * x + ph).T
    return field / max(float(field.std()), 1e-12)


def _render_case(rng: np.random.Generator, rf: np.random.Generator, sub: _Subject, g: _Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = g.scale
    shape = (g.h, g.w)

    # ---- slice level: position along the long axis, small through-plane / breathing shift.
    u = rng.random()
    kind = "empty" if u < _P_EMPTY_LV else ("apical" if u < _P_EMPTY_LV + _P_APICAL else "normal")
    if kind == "normal":
        cav_scale, rv_scale = rng.uniform(0.78, 1.05), rng.uniform(0.85, 1.05)
    elif kind == "apical":
        cav_scale, rv_scale = rng.uniform(0.15, 0.5), rng.uniform(0.3, 0.7)
    else:
        cav_scale, rv_scale = 0.0, rng.uniform(0.0, 0.5)
    shift_y, shift_x = rng.normal(0, 1.2 * s, 2)
    hcy, hcx = sub.heart[0] + shift_y, sub.heart[1] + shift_x

    # ---- heart geometry, in polar coordinates around the LV centre
    rho, ib = g.polar(hcy, hcx)
    lv = sub.lv  # the shape; its centre is (hcy, hcx) for this slice
    thick = (sub.myo_thickness * (1.0 + _harmonics(sub.myo_amps, sub.myo_phases, 1)))[ib]
    if kind == "empty":  # beyond the apex: a small solid cap of myocardium, no cavity
        r_endo = np.zeros_like(rho)
        r_epi = np.full_like(rho, sub.myo_thickness * rng.uniform(0.9, 1.4))
    else:
        r_endo = (cav_scale * lv.table())[ib]
        r_epi = r_endo + thick * (1.1 if kind == "apical" else 1.0)
    endo = rho < r_endo
    epi = rho < r_epi
    r_outer = np.sqrt(lv.a * lv.b) * max(cav_scale, 0.3) + sub.myo_thickness

    rv = np.zeros(shape, bool)
    rv_wall = np.zeros(shape, bool)
    if rv_scale > 0.05:
        d = sub.rv_dist * r_outer
        rv_shape = _Shape(
            hcy + d * np.sin(sub.rv_dir),
            hcx + d * np.cos(sub.rv_dir),
            sub.rv_along * r_outer * rv_scale,
            sub.rv_across * r_outer * rv_scale,
            sub.rv_dir,
            np.array([0.04, 0.02]),
            np.array([sub.rv_dir, 1.0]),
        )
        rho_rv, ib_rv = g.polar(rv_shape.cy, rv_shape.cx)
        r_rv = rv_shape.table()[ib_rv]
        rv = (rho_rv < r_rv) & ~epi
        rv_wall = (rho_rv < r_rv + 1.6 * s) & ~rv & ~epi

    # Papillary muscles: small dark disks inside the cavity near the wall (labelled LV cavity).
    pap = np.zeros(shape, bool)
    if kind == "normal":
        for ang, pr in sub.papillary:
            rr = float(lv.radius(ang)) * cav_scale * 0.68
            pap |= np.hypot(g.yy - (hcy + rr * np.sin(ang)), g.xx - (hcx + rr * np.cos(ang))) < pr

    label = np.zeros(shape, np.uint8)
    label[rv] = 1
    label[epi & ~endo] = 2
    label[endo] = 3

    # ---- image (bSSFP-like contrast), painter's algorithm over the subject's background
    sig = sub.background.copy()
    tex = _smooth_noise(rf, shape, 1.2 * s)
    low = _wave_field(rf, g, 40.0 * s)
    inner = sub.body_inner
    mediastinum = (rho < 1.18 * r_epi + 3 * s) | rv | rv_wall
    sig[mediastinum & inner & ~sub.aorta] = 0.38
    tissue = sub.body & (sig > 0.1)
    sig[tissue] += 0.05 * tex[tissue] + 0.04 * low[tissue]
    fat_band = (rho < r_epi + 1.8 * s) & ~epi & ~rv & ~rv_wall & inner  # patchy epicardial fat
    patch = _harmonics(np.ones(2), rng.uniform(0, 2 * np.pi, 2), 2)[ib]
    sig[fat_band & (patch > 0.6)] = 0.68
    sig[rv_wall] = 0.3
    sig[rv] = 0.84 + 0.03 * low[rv]
    myo = epi & ~endo
    sig[myo] = 0.27 + 0.02 * tex[myo]
    sig[endo] = 0.9 + 0.03 * low[endo]
    sig[pap & endo] = 0.3

    sig = ndimage.gaussian_filter(sig, rng.uniform(0.6, 0.9) * s, truncate=3.0)  # PSF / partial volume
    sig *= sub.bias * (1.0 + 0.03 * low)
    sigma = sub.noise_sigma * rng.uniform(0.9, 1.1)
    n1, n2 = rf.standard_normal((2, *shape))
    img = np.hypot(sig + sigma * n1, sigma * n2)  # Rician magnitude
    img = np.clip(img / np.percentile(img, 99.7), 0.0, 1.0).astype(np.float32)

    probs = _model_probs(rng, rf, sub, g, endo, rho, ib, rv, kind)
    return img, label, probs


def _model_probs(
    rng: np.random.Generator,
    rf: np.random.Generator,
    sub: _Subject,
    g: _Grid,
    endo: np.ndarray,
    rho: np.ndarray,
    ib: np.ndarray,
    rv: np.ndarray,
    kind: str,
) -> np.ndarray:
    """Over-confident, imperfect network output for the LV cavity: (H, W) float32 in [0, 1]."""
    s = g.scale
    diff = sub.difficulty
    # Signed distance to the true boundary in pixels (negative inside, boundary at 0).
    if endo.any():
        # Pixel-centre distances d >= 1 to the other side; the boundary sits half-way, so
        # sd = d_out - 0.5 outside and -(d_in - 0.5) inside. The inside EDT runs on the
        # cavity's bounding box padded with background, which is exact enough and cheaper.
        sd = ndimage.distance_transform_edt(~endo) - 0.5
        rows, cols = np.nonzero(endo.any(1))[0], np.nonzero(endo.any(0))[0]
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        sd[box] -= ndimage.distance_transform_edt(np.pad(endo[box], 1))[1:-1, 1:-1]
        sd[endo] += 1.0
        r_typ = float(np.sqrt(endo.sum() / np.pi))
    else:  # no cavity: a "virtual" tiny cavity that the network sometimes hallucinates
        sd = rho - rng.uniform(-3.5, 1.5) * s
        r_typ = 2.0 * s

    # Boundary displacement (pixels, + = over-segmentation), smooth along the boundary.
    # Tabulated over _ANG (angle seen from the LV centre), looked up per pixel below.
    delta = rng.normal(-0.3, 0.5) * s * diff + _harmonics(rng.normal(0, 0.75 / np.arange(1, 4)) * s * diff, rng.uniform(0, 2 * np.pi, 3), 1)
    softness = rng.uniform(0.45, 1.0) * s
    noise_amp = rng.uniform(1.0, 2.2) * min(diff, 2.0)

    if rng.random() < _P_HARD:  # failed / out-of-distribution prediction
        delta = delta + rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.45) * r_typ
        noise_amp *= 1.5
    if kind != "empty" and rng.random() < _P_PARTIAL_MISS:  # lose a sector of the cavity
        # von Mises bump in angle: exp(kappa (cos(phi - c) - 1)), width ~ 1 / sqrt(kappa)
        kappa = 1.0 / rng.uniform(0.35, 0.8) ** 2
        cos_d = np.cos(_ANG - rng.uniform(-np.pi, np.pi))
        delta = delta - rng.uniform(0.4, 1.1) * r_typ * np.exp(kappa * (cos_d - 1.0))

    z = -(sd - delta[ib]) / softness + noise_amp * _smooth_noise(rf, rho.shape, rng.uniform(3.0, 5.0) * s)

    if rng.random() < _P_FALSE_POSITIVE:  # a blob on look-alike bright tissue: RV or aorta
        target = rv if (rv.sum() > 20 and rng.random() < 0.7) else sub.aorta
        if target.any():
            din = ndimage.distance_transform_edt(target)
            ys, xs = np.nonzero(din >= max(1.0, 0.5 * din.max()))
            j = int(rng.random() * len(ys))
            rad = min(rng.uniform(2.5, 6.0) * s, float(din[ys[j], xs[j]]) + 1.0)
            d_fp = np.hypot(g.yy - ys[j], g.xx - xs[j]) - rad
            d_fp = np.maximum(d_fp, -din + 0.5 + 1.0 * s)  # stay inside the look-alike tissue
            z = np.maximum(z, -d_fp / softness + 0.5 * noise_amp * _smooth_noise(rf, rho.shape, 2.5 * s))

    z = _LOGIT_CAP * np.tanh(z / _LOGIT_CAP)
    return special.expit(z).astype(np.float32)


# ---------------------------------------------------------------------- sampled outputs
def phantom_samples(probs: np.ndarray, rng: np.random.Generator, n: int = 16) -> np.ndarray:
    """(n, 2, H, W) float32 SYNTHETIC softmax samples around a foreground probability map.

    "MC-dropout-like" maps sigmoid(logit(p) + Σ_j a_nj f_j + ε_n), with f_1 … f_4 smooth
    random fields of the image (spatially coherent variation, what CONSIGN's SVD picks up;
    two strong, two weak) and ε_n a little white noise. Used by the demo's CONSIGN/APS rows.
    """
    p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    z = special.logit(p)
    h, w = p.shape
    fields = ndimage.gaussian_filter(rng.standard_normal((4, h, w)), (0, 6, 6))
    fields /= fields.std(axis=(1, 2), keepdims=True)
    coef = rng.normal(0.0, 1.0, (n, 4)) * np.array([2.0, 2.0, 0.7, 0.7])
    out = np.empty((n, 2, h, w), np.float32)
    out[:, 1] = special.expit(z[None] + np.tensordot(coef, fields, axes=1) + 0.3 * rng.standard_normal((n, h, w)))
    out[:, 0] = 1.0 - out[:, 1]
    return out
