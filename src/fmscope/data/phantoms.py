"""Synthetic phantoms with exact ground truth: a light-sheet fluorescence volume and a FIB-SEM-like EM stack.

Both generators are pure functions of their arguments (``np.random.default_rng(seed)`` only), vectorised with
numpy/scipy, and return a :class:`Phantom`: the raw image plus the noise-free object geometry it was rendered from.

Light-sheet (``kind='lightsheet'``, unit micrometer): branching vessel trees, textured nucleus-like ellipsoids and
punctate plaques with a diffuse halo on a smooth inhomogeneous background, times an illumination falloff, blurred by an
anisotropic Gaussian PSF, then Poisson photon noise, camera gain, offset and read noise, uint16. Objects are painted in
the order vessels, nuclei, plaques (a later one wins where they overlap); nuclei and plaques never overlap vessels, so
each vessel tree stays one connected piece. The plaque label is its dense core; the halo is unlabelled glow.

EM (``kind='em'``, unit nanometer): a porous layer (band in Y; pores are thresholded smoothed 3D noise) of intermediate
grey between a dark background above and a darker-than-layer substrate below, bright particles in the layer whose
centre drifts by ``drift_px_per_slice`` per slice, curtaining stripes and Gaussian noise, uint8. Classes
``('layer', 'particle')``; the layer class is the solid phase (pores are background); particles are the instances,
one id per particle across all the slices it spans.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from fmscope.errors import InvalidInputError

logger = logging.getLogger(__name__)

LIGHTSHEET_STRUCTURES = ("nuclei", "plaques", "vessels")
EM_CLASSES = ("layer", "particle")
# Camera model of the light-sheet phantom (sCMOS-like): digital offset, gain (DN per photoelectron), read noise (DN).
CAMERA_OFFSET, CAMERA_GAIN, READ_NOISE = 100.0, 2.0, 3.0
# Default densities: objects per 1e6 um^3 (light-sheet), particles per 32x128x128 voxels (EM).
_DENSITY = {"nuclei": 60.0, "plaques": 8.0, "vessels": 3.5}
_EM_PARTICLES_PER_VOXEL = 40.0 / (32 * 128 * 128)
_MIN_SHAPE = {"lightsheet": (8, 16, 16), "em": (4, 32, 32)}


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic image with its exact ground truth, all ``(Z, Y, X)``.

    Attributes:
        image: raw intensities, uint16 (light-sheet) or uint8 (EM).
        semantic: uint8 class map, 0 = background, ``i`` = ``class_names[i - 1]``.
        instances: int32 instance ids, 0 = background, unique across classes, consecutive from 1.
        class_names: names of classes 1..K.
        spacing: voxel size (Z, Y, X) in ``unit``.
        unit: ``'micrometer'`` or ``'nanometer'``.
        kind: ``'lightsheet'`` or ``'em'``.
        seed: the seed it was generated with.
        caption: one or two sentences describing the image.
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    class_names: tuple[str, ...]
    spacing: tuple[float, float, float]
    unit: str
    kind: str
    seed: int
    caption: str

    def __post_init__(self) -> None:
        for name in ("semantic", "instances"):
            if getattr(self, name).shape != self.image.shape:
                raise InvalidInputError(
                    f"{name}: expected the image shape {self.image.shape}, got {getattr(self, name).shape}"
                )

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of the class called ``name``."""
        if name not in self.class_names:
            raise InvalidInputError(f"name: expected one of {list(self.class_names)}, got {name!r}")
        return self.semantic == self.class_names.index(name) + 1


# ----------------------------------------------------------------------------------------------------- validation
def _shape3(shape: object, kind: str) -> tuple[int, int, int]:
    minimum = _MIN_SHAPE[kind]
    error = InvalidInputError(f"shape: expected 3 ints (Z, Y, X) of at least {minimum}, got {shape!r}")
    if not isinstance(shape, Sequence) or len(shape) != 3:
        raise error
    for s, m in zip(shape, minimum, strict=True):
        if not isinstance(s, int | np.integer) or isinstance(s, bool) or s < m:
            raise error
    return int(shape[0]), int(shape[1]), int(shape[2])


def _triple(name: str, value: object, *, positive: bool) -> tuple[float, float, float]:
    bound = "> 0" if positive else ">= 0"
    try:
        vals = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and (v > 0 if positive else v >= 0) for v in vals):
        raise InvalidInputError(f"{name}: expected 3 finite numbers {bound} (Z, Y, X), got {value!r}")
    return vals[0], vals[1], vals[2]


def _number(name: str, value: object, lo: float, hi: float = math.inf, *, lo_open: bool = False) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
        rng = f"{'>' if lo_open else '>='} {lo}" + ("" if hi == math.inf else f" and <= {hi}")
        raise InvalidInputError(f"{name}: expected a finite number {rng}, got {value!r}")
    return v


def _count(name: str, value: int | None, default: float) -> int:
    if value is None:
        return max(1, round(default))
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(f"{name}: expected None or an int >= 0, got {value!r}")
    return int(value)


def _seed(seed: object) -> int:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise InvalidInputError(f"seed: expected an int >= 0, got {seed!r}")
    return int(seed)


# -------------------------------------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: Sequence[float] | np.ndarray) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` voxels (coarse grid + zoom)."""
    f = [max(1, int(s // 2)) for s in sigma]
    coarse = [-(-n // k) + 2 for n, k in zip(shape, f, strict=True)]
    field = ndimage.gaussian_filter(
        rng.standard_normal(coarse, dtype=np.float32), [s / k for s, k in zip(sigma, f, strict=True)]
    )
    if any(k > 1 for k in f):
        field = ndimage.zoom(field, f, order=1, prefilter=False)
    field = field[tuple(slice(0, n) for n in shape)]
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def _box(center: np.ndarray, half: np.ndarray, spacing: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """Voxel slices covering ``center +- half`` (physical units; voxel i sits at i * spacing), or None if outside."""
    box = []
    for c, h, s, n in zip(center.tolist(), half.tolist(), spacing.tolist(), shape, strict=True):
        lo, hi = max(math.ceil((c - h) / s), 0), min(math.floor((c + h) / s) + 1, n)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    return tuple(box)


def _offsets(box: tuple[slice, ...], center: np.ndarray, spacing: np.ndarray) -> list[np.ndarray]:
    """Broadcastable physical offsets (dz, dy, dx) of the voxels in ``box`` from ``center``, float32."""
    out = []
    for axis, (sl, s, c) in enumerate(zip(box, spacing.tolist(), center.tolist(), strict=True)):
        shape = [1, 1, 1]
        shape[axis] = sl.stop - sl.start
        out.append((np.arange(sl.start, sl.stop, dtype=np.float32) * s - c).reshape(shape))
    return out


def _vessel_tree(rng: np.random.Generator, extent: np.ndarray, r_min: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Branches (points (N, 3), radii (N,)) of one bifurcating tree of tubes entering from a face of the volume.

    Each branch is a smooth random walk (direction = running sum of small kicks) with a slowly tapering radius, cut
    where it leaves the volume; children branch off about every 25 um at 30-70 degrees with 65-85 % of the radius.
    """
    axis, side = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    pos = extent * rng.uniform(0.15, 0.85, 3)
    pos[axis] = side * extent[axis]
    direction = rng.normal(0.0, 0.4, 3)
    direction[axis] = 1.0 - 2.0 * side
    stack = [(pos, direction / np.linalg.norm(direction), rng.uniform(3.0, 5.5), 3.0 * float(extent.max()))]
    branches: list[tuple[np.ndarray, np.ndarray]] = []
    while stack and len(branches) < 16:
        pos, direction, radius, length = stack.pop()
        step = 1.2 * radius
        m = max(2, math.ceil(length / step))
        kicks = rng.normal(0.0, 0.12 * math.sqrt(step), (m, 3))
        kicks[0] = 0.0
        dirs = direction + np.cumsum(kicks, axis=0)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        points = pos + step * np.concatenate([np.zeros((1, 3)), np.cumsum(dirs[:-1], axis=0)])
        radii = np.maximum(r_min, radius * 0.997 ** np.arange(m))
        outside = np.any((points < -radii[:, None]) | (points > extent + radii[:, None]), axis=1)
        m = int(np.argmax(outside)) + 1 if outside.any() else m  # keep one point outside: the tube reaches the edge
        points, radii, dirs = points[:m], radii[:m], dirs[:m]
        branches.append((points, radii))
        for k in np.flatnonzero(rng.random(m) < step / 25.0)[:4]:
            if k == 0 or k == m - 1:
                continue
            perp = np.cross(dirs[k], rng.normal(size=3))
            angle = rng.uniform(0.5, 1.2)
            child = math.cos(angle) * dirs[k] + math.sin(angle) * perp / np.linalg.norm(perp)
            stack.append((points[k], child, max(r_min, radii[k] * rng.uniform(0.65, 0.85)), rng.uniform(25, 70)))
    return branches


def _stamp_tube(labels: np.ndarray, value: int, points: np.ndarray, radii: np.ndarray, spacing: np.ndarray) -> None:
    """Write ``value`` into ``labels`` (in place) on the capsules (segment i -> i+1, radius ``radii[i]``)."""
    shape = labels.shape
    for p0, p1, r in zip(points[:-1], points[1:], radii[:-1], strict=True):
        box = _box((p0 + p1) / 2, np.abs(p1 - p0) / 2 + r, spacing, shape)
        if box is None:
            continue
        d = _offsets(box, p0, spacing)
        v = (p1 - p0).astype(np.float32)
        t = np.clip((d[0] * v[0] + d[1] * v[1] + d[2] * v[2]) / float(v @ v), 0.0, 1.0)
        labels[box][(d[0] - t * v[0]) ** 2 + (d[1] - t * v[1]) ** 2 + (d[2] - t * v[2]) ** 2 <= r * r] = value


def _ellipsoid(offsets: list[np.ndarray], rotation: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask and normalised radius (1 on the surface) of a rotated ellipsoid over a box of offsets."""
    dz, dy, dx = np.broadcast_arrays(*offsets)
    local = np.stack([dz, dy, dx], axis=-1) @ rotation  # coordinates in the ellipsoid frame
    rho = np.sqrt(np.sum((local / axes) ** 2, axis=-1))
    return rho <= 1.0, rho


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


# ------------------------------------------------------------------------------------------------- light-sheet
def lightsheet_phantom(
    shape: tuple[int, int, int] = (64, 96, 96),
    *,
    structures: Sequence[str] = LIGHTSHEET_STRUCTURES,
    seed: int = 0,
    n_nuclei: int | None = None,
    n_plaques: int | None = None,
    n_vessels: int | None = None,
    blur_sigma: tuple[float, float, float] = (2.0, 1.0, 1.0),
    photons: float = 1000.0,
    background: float = 0.2,
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
) -> Phantom:
    """Light-sheet fluorescence volume of cleared tissue, uint16 ``(Z, Y, X)``, with exact ground truth.

    Args:
        shape: (Z, Y, X) voxels, at least (8, 16, 16).
        structures: which of ``'nuclei'``, ``'plaques'``, ``'vessels'`` to draw; their order gives the class ids.
        seed: seed of ``np.random.default_rng``.
        n_nuclei, n_plaques, n_vessels: object counts (vessels: number of trees); None = density-based default
            (60, 8 and 3.5 per 1e6 um^3, at least 1).
        blur_sigma: Gaussian PSF sigma in voxels (Z, Y, X).
        photons: expected photoelectrons of a typical nucleus (brightness 1.0); sets the signal-to-noise ratio.
        background: tissue autofluorescence relative to a typical nucleus (vessels ~0.7, plaques 6-12).
        spacing: voxel size (Z, Y, X) in micrometers; object sizes are physical, so they scale with it.
    """
    zyx = _shape3(shape, "lightsheet")
    seed = _seed(seed)
    if isinstance(structures, str) or not isinstance(structures, Sequence) or not structures:
        raise InvalidInputError(f"structures: expected a non-empty sequence of names, got {structures!r}")
    unknown = [s for s in structures if s not in LIGHTSHEET_STRUCTURES]
    if unknown or len(set(structures)) != len(structures):
        raise InvalidInputError(
            f"structures: expected distinct names from {list(LIGHTSHEET_STRUCTURES)}, got {list(structures)}"
        )
    sigma = _triple("blur_sigma", blur_sigma, positive=False)
    sp = np.array(_triple("spacing", spacing, positive=True), dtype=np.float32)
    photons = _number("photons", photons, 0.0, lo_open=True)
    background = _number("background", background, 0.0)
    volume = float(np.prod(np.array(zyx) * sp)) / 1e6
    given = {"nuclei": n_nuclei, "plaques": n_plaques, "vessels": n_vessels}
    for s in LIGHTSHEET_STRUCTURES:
        if s not in structures and given[s] is not None:
            raise InvalidInputError(f"n_{s}: expected None because '{s}' is not in structures, got {given[s]!r}")
    counts = {s: _count(f"n_{s}", given[s], _DENSITY[s] * volume) if s in structures else 0 for s in given}
    rng = np.random.default_rng(seed)
    extent = (np.array(zyx) - 1) * sp
    r_min = max(1.5, 0.55 * float(np.linalg.norm(sp)))  # the voxel nearest to any centre is always inside
    semantic = np.zeros(zyx, np.uint8)
    instances = np.zeros(zyx, np.int32)
    signal = np.zeros(zyx, np.float32)  # object brightness (relative to a typical nucleus)
    halo = np.zeros(zyx, np.float32)

    for tree in range(1, counts["vessels"] + 1):  # instance ids 1..n_vessels, a later tree wins where they cross
        for points, radii in _vessel_tree(rng, extent, max(2.0, r_min)):
            _stamp_tube(instances, tree, points, radii, sp)
    vessels = instances > 0
    semantic[vessels] = structures.index("vessels") + 1 if counts["vessels"] else 0
    signal[vessels] = rng.uniform(0.55, 0.85, counts["vessels"] + 1).astype(np.float32)[instances[vessels]]
    next_id = counts["vessels"] + 1

    def place(
        name: str, n: int, size: tuple[float, float], min_gap: float, margin: float = 1.0
    ) -> list[tuple[tuple[slice, ...], np.ndarray, np.ndarray]]:
        """Rejection-sample ``n`` ellipsoids that avoid vessels and keep centres ``min_gap * (a_i + a_j)`` apart.

        Returns (box, inside, rho) per ellipsoid; the box reaches ``margin`` times the largest semi-axis.
        """
        placed: list[tuple[tuple[slice, ...], np.ndarray, np.ndarray]] = []
        centres, sizes = np.zeros((0, 3)), np.zeros(0)
        for _ in range(30 * n):
            if len(placed) == n:
                break
            centre, a = rng.uniform(0, 1, 3) * extent, rng.uniform(*size)
            axes = (a * rng.uniform(0.75, 1.25, 3)).astype(np.float32)
            if np.any(np.linalg.norm(centres - centre, axis=1) < min_gap * (sizes + a)):
                continue
            box = _box(centre, np.full(3, margin * axes.max()), sp, zyx)
            if box is None:
                continue
            inside, rho = _ellipsoid(_offsets(box, centre, sp), _rotation(rng), axes)
            if not inside.any() or np.any(vessels[box] & inside):
                continue
            placed.append((box, inside, rho))
            centres, sizes = np.vstack([centres, centre]), np.append(sizes, a)
        if len(placed) < n:
            logger.warning("lightsheet_phantom: placed %d of %d %s (volume too crowded)", len(placed), n, name)
        return placed

    if counts["nuclei"]:
        texture = 1.0 + 0.3 * _smooth_noise(rng, zyx, 1.0 / sp)
        cls = structures.index("nuclei") + 1
        for box, inside, _ in place("nuclei", counts["nuclei"], (4.0, 6.5), 0.8):
            brightness = float(np.clip(rng.lognormal(0.0, 0.4), 0.3, 2.5))
            semantic[box][inside], instances[box][inside] = cls, next_id
            signal[box][inside] = brightness * np.clip(texture[box][inside], 0.2, None)
            next_id += 1
    if counts["plaques"]:
        cls = structures.index("plaques") + 1
        for box, _, rho in place("plaques", counts["plaques"], (r_min, max(3.0, 1.5 * r_min)), 1.5, 3.0):
            brightness = rng.uniform(6.0, 12.0)
            inside = rho <= 1.0
            semantic[box][inside], instances[box][inside], signal[box][inside] = cls, next_id, brightness
            halo[box] += (0.3 * brightness * np.exp(-2.0 * (rho - 1.0)) * (rho > 1.0)).astype(np.float32)
            next_id += 1
    instances = relabel_sequential(instances)[0].astype(np.int32)

    # Background, illumination (sheet enters from x = 0 and is absorbed; depth falloff; stripes along x), PSF, noise.
    tissue = background * np.clip(1.0 + 0.35 * _smooth_noise(rng, zyx, 15.0 / sp), 0.3, None)
    stripes = np.clip(_smooth_noise(rng, (zyx[0], zyx[1], 1), (4.0 / sp[0], 2.0 / sp[1], 1.0)), 0.0, None)
    zz, xx = np.ogrid[: zyx[0], : zyx[2]]
    falloff = np.exp(-(xx * sp[2]) / (3.0 * max(extent[2], 1.0)) - (zz * sp[0]) / (4.0 * max(extent[0], 1.0)))
    illumination = (falloff[:, None, :] * (1.0 - 0.08 * stripes)).astype(np.float32)
    clean = (tissue + signal + halo) * illumination
    blurred = ndimage.gaussian_filter(clean, sigma) if any(sigma) else clean
    counts_e = rng.poisson(np.clip(blurred, 0, None) * photons).astype(np.float32)
    raw = CAMERA_OFFSET + CAMERA_GAIN * counts_e + rng.normal(0.0, READ_NOISE, zyx).astype(np.float32)
    image = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)

    parts = {
        "nuclei": f"{counts['nuclei']} textured cell nuclei",
        "plaques": f"{counts['plaques']} bright punctate amyloid-like plaques with diffuse halos",
        "vessels": f"a branching network of {counts['vessels']} blood vessel trees",
    }
    listed = [parts[s] for s in structures]
    what = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    caption = (
        f"Synthetic light-sheet fluorescence microscopy patch of cleared tissue ({zyx[0]} x {zyx[1]} x {zyx[2]} voxels "
        f"at {sp[0]:g} x {sp[1]:g} x {sp[2]:g} um) showing {what}. "
        "Illumination falls off across the field, and the image is blurred along Z and corrupted by photon noise."
    )
    return Phantom(
        image, semantic, instances, tuple(structures), (float(sp[0]), float(sp[1]), float(sp[2])),
        "micrometer", "lightsheet", seed, caption,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- EM
def em_stack_phantom(
    shape: tuple[int, int, int] = (32, 128, 128),
    *,
    seed: int = 0,
    n_particles: int | None = None,
    drift_px_per_slice: float = 0.5,
    porosity: float = 0.35,
    noise_sigma: float = 10.0,
    spacing: tuple[float, float, float] = (10.0, 5.0, 5.0),
) -> Phantom:
    """FIB-SEM-like stack of a porous catalyst layer with drifting bright particles, uint8 ``(Z, Y, X)``.

    Args:
        shape: (Z, Y, X) voxels, at least (4, 32, 32). The layer is a band across Y, about its middle half.
        seed: seed of ``np.random.default_rng``.
        n_particles: number of particles; None = 40 per 32 x 128 x 128 voxels (at least 1).
        drift_px_per_slice: in-plane displacement of each particle's centre per slice (pixels, random direction).
        porosity: fraction of the layer band that is pore, in [0, 0.9].
        noise_sigma: standard deviation of the additive Gaussian noise (grey levels).
        spacing: voxel size (Z, Y, X) in nanometers (metadata only; sizes are in pixels).
    """
    zyx = _shape3(shape, "em")
    seed = _seed(seed)
    n = _count("n_particles", n_particles, _EM_PARTICLES_PER_VOXEL * math.prod(zyx))
    drift = _number("drift_px_per_slice", drift_px_per_slice, 0.0)
    porosity = _number("porosity", porosity, 0.0, 0.9)
    noise_sigma = _number("noise_sigma", noise_sigma, 0.0)
    sp = _triple("spacing", spacing, positive=True)
    rng = np.random.default_rng(seed)
    nz, ny, nx = zyx

    # Layer band with wavy boundaries (smooth in Z and X); pores = thresholded smoothed 3D noise inside the band.
    wobble = _smooth_noise(rng, (nz, 2, nx), (4.0, 1.0, 12.0))
    top = (0.25 + 0.03 * wobble[:, 0]) * ny
    bottom = (0.75 + 0.03 * wobble[:, 1]) * ny
    yy = np.arange(ny, dtype=np.float32)[None, :, None]
    band = (yy >= top[:, None, :]) & (yy < bottom[:, None, :])
    pore_field = _smooth_noise(rng, zyx, (1.5, 3.0, 3.0))
    pores = band & (pore_field < np.quantile(pore_field[band], porosity)) if porosity > 0 else np.zeros(zyx, bool)
    semantic = (band & ~pores).astype(np.uint8)
    instances = np.zeros(zyx, np.int32)

    # Particles: a disc per slice whose centre drifts linearly and whose radius shrinks at the ends of its z-extent.
    taken = np.zeros(zyx, bool)
    placed = 0
    for _ in range(30 * n):
        if placed == n:
            break
        r0, half = rng.uniform(2.5, 6.0), rng.uniform(3.0, 8.0)
        zc = rng.uniform(0, nz - 1)
        centre = np.array([rng.uniform(0.3, 0.7) * ny, rng.uniform(r0, nx - 1 - r0)])
        angle = rng.uniform(0, 2 * np.pi)
        velocity = drift * np.array([math.sin(angle), math.cos(angle)])
        z = np.arange(max(0, math.ceil(zc - half)), min(nz - 1, math.floor(zc + half)) + 1)
        t = (z - zc) / (half + 0.5)
        radius = r0 * np.sqrt(np.clip(1.0 - t**4, 0.05, None)) * (1.0 + 0.06 * np.sin(rng.uniform(0, 6) + 0.7 * z))
        centres = centre + (z - zc)[:, None] * velocity
        lo = np.floor(centres.min(0) - radius.max()).astype(int).clip(0)
        hi = np.ceil(centres.max(0) + radius.max()).astype(int) + 1
        box = (slice(int(z[0]), int(z[-1]) + 1), slice(lo[0], min(hi[0], ny)), slice(lo[1], min(hi[1], nx)))
        gy, gx = np.ogrid[box[1], box[2]]
        dist2 = (gy[None] - centres[:, 0, None, None]) ** 2 + (gx[None] - centres[:, 1, None, None]) ** 2
        disc = dist2 <= (radius**2)[:, None, None]
        if not disc.any() or np.any(taken[box] & disc):
            continue
        placed += 1
        taken[box] |= disc
        instances[box][disc] = placed
    if placed < n:
        logger.warning("em_stack_phantom: placed %d of %d particles (volume too crowded)", placed, n)
    semantic[taken] = 2
    instances = relabel_sequential(instances)[0].astype(np.int32)

    # Grey levels: dark background above, substrate below, pores, textured solid layer, bright particles.
    below = yy >= bottom[:, None, :]
    grey = np.where(below, 75.0, 30.0).astype(np.float32) + 5.0 * _smooth_noise(rng, zyx, (1.0, 2.0, 2.0))
    grey[pores] = 50.0 + 8.0 * pore_field[pores]
    grey[semantic == 1] = 130.0 + 12.0 * _smooth_noise(rng, zyx, (0.7, 1.0, 1.0))[semantic == 1]
    grey[taken] = 225.0
    grey = ndimage.gaussian_filter(grey, (0.0, 0.8, 0.8))  # SEM probe, in-plane only
    # Curtaining: vertical streaks (constant along Y, persistent across slices), stronger towards the bottom.
    persistent = ndimage.gaussian_filter1d(rng.standard_normal(nx), 0.8)
    per_slice = ndimage.gaussian_filter1d(rng.standard_normal((nz, nx)), 0.8, axis=1)
    streaks = (0.75 * persistent + 0.35 * per_slice)[:, None, :] * (0.3 + 0.7 * yy / ny)
    raw = grey + 14.0 * streaks + rng.normal(0.0, 1.0, zyx).astype(np.float32) * noise_sigma
    image = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    caption = (
        f"Synthetic FIB-SEM stack ({nz} slices of {ny} x {nx} pixels at {sp[0]:g} x {sp[1]:g} x {sp[2]:g} nm) of a "
        f"porous catalyst layer (porosity {porosity:.2f}) between a dark background and a substrate, with {placed} "
        f"bright catalyst-like particles drifting {drift:g} px per slice. Vertical curtaining stripes and Gaussian "
        "noise are visible."
    )
    return Phantom(image, semantic, instances, EM_CLASSES, sp, "nanometer", "em", seed, caption)
