"""Synthetic cardiac segmentations in the real on-disk layout: one NIfTI label volume per case.

    sensorium synth cardiac --out DIR [--seed S] [--cases N] [--shape X Y Z] [--spacing SX SY SZ]
                            [--variation default|mild] [--workers W]

writes

    DIR/case_0000.nii.gz ...   uint8 labels: 0 background, 1..10 the structures of
                               `sensorium.recipes.cardiac.reader.CARDIAC_STRUCTURES` (label = index + 1)
    DIR/labels.json            {"background": 0, "structures": {name: label, ...}}

Each heart is a set of implicit shapes in a canonical heart frame (x patient-left, y anterior,
z superior; millimetres): a prolate LV blood pool with the myocardium wrapped around it and both
cut at the valve plane, a crescent RV against the septum, two atria on the base, the aorta rising
from the LV outflow into an arch, the pulmonary trunk from the RV with its two branches, both venae
cavae on the right atrium and four pulmonary veins on the left atrium. Labels are painted in a fixed
priority (chambers before vessels), so neighbours touch without overlapping and the myocardium
encloses the LV, as in manual segmentations.

Per case: overall size (x0.88-1.12), each structure's radii (+-8%), pose (rotation up to +-12
degrees per axis, +-6 mm shift) and a smooth random deformation (three sinusoidal modes of 60-140 mm
wavelength, ~2.5 mm amplitude) vary; the `mild` preset (the CPU demo's) halves every amount
(`HeartVariation`). The affine runs voxel x and y towards world -x and -y (an
LPS-acquired scan stored in RAS), and voxels are anisotropic (default 1 x 1 x 2 mm), so a reader
that ignores the affine or the spacing produces visibly wrong geometry. Everything is vectorised
numpy on the voxel grid and deterministic for a seed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensorium.data.processes import process_pool
from sensorium.errors import ConfigError
from sensorium.recipes.cardiac.reader import CARDIAC_STRUCTURES, write_label_map


# --- implicit primitives (negative inside; only the sign is used) ----------------------------------
def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _frame(axis: np.ndarray) -> np.ndarray:
    """(3, 3) orthonormal rows: `axis` first, then two perpendicular directions."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b = _unit(np.cross(axis, helper))
    return np.stack([axis, b, np.cross(axis, b)])


def ellipsoid(p: np.ndarray, center, frame: np.ndarray, radii) -> np.ndarray:
    """(N,) scaled implicit of an ellipsoid with semi-axes `radii` along the rows of `frame`."""
    local = (p - center) @ frame.T  # (N, 3) coordinates along the ellipsoid's axes
    return (np.linalg.norm(local / np.asarray(radii), axis=1) - 1.0) * min(radii)


def capsule(p: np.ndarray, a, b, radius: float) -> np.ndarray:
    """(N,) distance to segment a-b minus the radius: a round-ended tube."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)  # (N,) projection onto the segment
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - radius


def tube(p: np.ndarray, points: list, radius: float) -> np.ndarray:
    """(N,) union of capsules along a polyline."""
    return np.min([capsule(p, a, b, radius) for a, b in zip(points[:-1], points[1:])], axis=0)


def below_plane(p: np.ndarray, origin, normal) -> np.ndarray:
    """(N,) implicit of the half-space (p - origin) . normal <= 0."""
    return (p - origin) @ normal


# --- one heart ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeartVariation:
    """How much cases differ: each amount is the half-width of a uniform draw (deformation: the
    standard deviation of each mode's amplitude)."""

    scale: float = 0.12
    """Overall size: x(1 - scale) .. x(1 + scale)."""
    radius: float = 0.08
    """Each structure's radii: x(1 - radius) .. x(1 + radius)."""
    rotation_deg: float = 12.0
    """Rotation about each axis."""
    shift_mm: float = 6.0
    deform_mm: float = 2.5
    """Amplitude of the smooth deformation's three sinusoidal modes."""


VARIATIONS = {
    "default": HeartVariation(),
    # The CPU demo's: half of every amount, so a few dozen training cases cover the family well
    # enough for a 10-minute fit; cases still differ in size, pose and shape.
    "mild": HeartVariation(scale=0.06, radius=0.04, rotation_deg=6.0, shift_mm=3.0, deform_mm=1.25),
}


@dataclass(frozen=True)
class HeartParams:
    """Random variation of one case (see the module docstring)."""

    scale: float
    radius_jitter: np.ndarray  # (10,) multiplicative, one per structure
    rotation: np.ndarray  # (3, 3) heart frame -> world
    shift: np.ndarray  # (3,) mm
    mode_k: np.ndarray  # (3, 3) wave vectors of the deformation (rad / mm)
    mode_amp: np.ndarray  # (3, 3) displacement amplitudes (mm)
    mode_phase: np.ndarray  # (3,)

    @classmethod
    def draw(cls, rng: np.random.Generator, variation: HeartVariation = HeartVariation()) -> "HeartParams":
        v = variation
        angles = np.deg2rad(rng.uniform(-v.rotation_deg, v.rotation_deg, size=3))
        cx, cy, cz = np.cos(angles)
        sx, sy, sz = np.sin(angles)
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        directions = rng.normal(size=(3, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(60, 140, size=3)
        return cls(
            scale=float(rng.uniform(1 - v.scale, 1 + v.scale)),
            radius_jitter=rng.uniform(1 - v.radius, 1 + v.radius, size=len(CARDIAC_STRUCTURES)),
            rotation=rz @ ry @ rx,
            shift=rng.uniform(-v.shift_mm, v.shift_mm, size=3),
            mode_k=directions * (2 * np.pi / wavelengths)[:, None],
            mode_amp=rng.normal(0.0, v.deform_mm, size=(3, 3)),
            mode_phase=rng.uniform(0, 2 * np.pi, size=3),
        )

    def to_heart_frame(self, world: np.ndarray) -> np.ndarray:
        """(N, 3) world mm -> (N, 3) canonical heart-frame mm, deformed."""
        h = ((world - self.shift) @ self.rotation) / self.scale  # inverse pose: R^T (x - t) / s
        phase = h @ self.mode_k.T + self.mode_phase  # (N, 3 modes)
        return h + np.sin(phase) @ self.mode_amp  # smooth displacement, (N, 3)


def heart_implicits(p: np.ndarray, jitter: np.ndarray) -> list[np.ndarray]:
    """The 10 structures' implicits at heart-frame points p (N, 3), in CARDIAC_STRUCTURES order.

    `jitter` (10,) scales each structure's radii. Geometry in mm, loosely after an adult heart.
    """
    j = dict(zip(CARDIAC_STRUCTURES, jitter))
    u = _unit([0.5, 0.45, -0.75])  # LV long axis, base -> apex (apex left, anterior, inferior)
    f_lv = _frame(u)
    c_lv = np.array([12.0, -2.0, -12.0])
    base = c_lv - 24.0 * u  # valve plane: the ventricles are cut here, the atria sit beyond it
    cut = below_plane(p, base, -u)  # <= 0 on the apex side of the valve plane

    lv_radii = np.array([36.0, 19.0, 19.0]) * j["left_ventricle"]
    lv = np.maximum(ellipsoid(p, c_lv, f_lv, lv_radii), cut)
    # The wall is the LV's radii plus a thickness (8 mm at the apex, 9 mm around), so it never
    # thins below a couple of voxels whatever the jitter.
    wall = np.array([8.0, 9.0, 9.0]) * j["lv_myocardium"]
    myo_outer = np.maximum(ellipsoid(p, c_lv, f_lv, lv_radii + wall), cut)
    c_rv = c_lv + np.array([-22.0, 12.0, 6.0])
    rv = np.maximum(ellipsoid(p, c_rv, _frame(u), np.array([38, 30, 17]) * j["right_ventricle"]),
                    below_plane(p, base + np.array([-20.0, 10.0, 4.0]), -u))
    c_la = base - 14.0 * u + np.array([4.0, -12.0, 0.0])
    la = ellipsoid(p, c_la, _frame(_unit([1, 0, 0.3])), np.array([24, 18, 17]) * j["left_atrium"])
    c_ra = c_rv - 28.0 * u + np.array([-6.0, -6.0, 0.0])
    ra = ellipsoid(p, c_ra, _frame(_unit([0, 0.3, 1])), np.array([22, 19, 18]) * j["right_atrium"])

    root = base + 4.0 * u + np.array([-6.0, 6.0, 0.0])  # LV outflow, next to the septum
    arch_top = root + np.array([-4.0, 2.0, 40.0])
    aorta = tube(p, [root, arch_top, arch_top + np.array([14.0, -22.0, 10.0]),
                     arch_top + np.array([16.0, -28.0, -45.0])], 12.0 * j["aorta"])
    trunk0 = c_rv - 10.0 * u + np.array([6.0, 14.0, 6.0])  # RV outflow, anterior
    trunk1 = trunk0 + np.array([8.0, 2.0, 28.0])
    r_pa = 11.0 * j["pulmonary_artery"]
    pa = np.minimum(tube(p, [trunk0, trunk1], r_pa),
                    np.minimum(capsule(p, trunk1, trunk1 + np.array([26.0, -16.0, 4.0]), 0.75 * r_pa),
                               capsule(p, trunk1, trunk1 + np.array([-30.0, -14.0, 2.0]), 0.75 * r_pa)))
    svc = capsule(p, c_ra + np.array([0.0, 0.0, 12.0]), c_ra + np.array([2.0, -2.0, 62.0]),
                  9.0 * j["superior_vena_cava"])
    ivc = capsule(p, c_ra - np.array([0.0, 0.0, 10.0]), c_ra - np.array([-2.0, 4.0, 60.0]),
                  11.0 * j["inferior_vena_cava"])
    r_pv = 5.5 * j["pulmonary_veins"]
    pv = np.min([capsule(p, c_la, c_la + 36.0 * _unit(d), r_pv)
                 for d in ([1, -0.3, 0.45], [1, -0.3, -0.35], [-1, -0.4, 0.45], [-1, -0.4, -0.35])], axis=0)
    return [lv, rv, la, ra, myo_outer, aorta, pa, svc, ivc, pv]


# Painting priority (first wins where shapes overlap): the LV pool, then the myocardium around it,
# the other chambers, then the vessels, so vessels end on the chamber walls they drain into.
PRIORITY = ("left_ventricle", "lv_myocardium", "right_ventricle", "left_atrium", "right_atrium",
            "aorta", "pulmonary_artery", "superior_vena_cava", "inferior_vena_cava", "pulmonary_veins")


def volume_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """(4, 4) voxel -> world (mm): voxel x and y towards world -x and -y (LPS scan in RAS), volume
    centred on 0."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    centre = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def label_volume(shape: tuple[int, int, int], affine: np.ndarray, params: HeartParams) -> np.ndarray:
    """(X, Y, Z) uint8 labels of one heart on the grid described by `affine`."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index @ affine[:3, :3].T + affine[:3, 3]  # (N, 3) mm
    implicits = dict(zip(CARDIAC_STRUCTURES, heart_implicits(params.to_heart_frame(world),
                                                             params.radius_jitter)))
    labels = np.zeros(len(world), dtype=np.uint8)
    for name in reversed(PRIORITY):  # paint lowest priority first, so higher priorities overwrite
        labels[implicits[name] < 0] = CARDIAC_STRUCTURES.index(name) + 1
    return labels.reshape(shape)


# --- files ----------------------------------------------------------------------------------------
def _save_nifti(labels: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(labels, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)  # scanner coordinates, as a scanner export would set them
    image.set_sform(affine, code=1)
    # Atomic: a killed run never leaves a truncated .nii.gz that looks like a case.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".nii.gz")
    os.close(fd)
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_case(out: Path, seed: int, case: int, shape: tuple[int, int, int], affine: np.ndarray,
               variation: HeartVariation) -> Path:
    """One case's volume: out/case_<case>.nii.gz, from its own random stream (case i is the same
    for any number of cases and workers)."""
    rng = np.random.default_rng([seed, case])
    path = out / f"case_{case:04d}.nii.gz"
    _save_nifti(label_volume(shape, affine, HeartParams.draw(rng, variation)), affine, path)
    return path


def generate(out: str | Path, seed: int = 0, cases: int = 8, shape: tuple[int, int, int] = (128, 128, 64),
             spacing: tuple[float, float, float] = (1.0, 1.0, 2.0), variation: str | HeartVariation = "default",
             workers: int = 1) -> list[Path]:
    """Write `cases` label volumes and labels.json into `out`; returns the volume paths.

    variation: a `HeartVariation` or the name of one in `VARIATIONS`. workers: processes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if isinstance(variation, str):
        if variation not in VARIATIONS:
            raise ConfigError("variation", f"unknown variation {variation!r}; known: {sorted(VARIATIONS)}")
        variation = VARIATIONS[variation]
    affine = volume_affine(shape, spacing)
    write_label_map(out / "labels.json", CARDIAC_STRUCTURES)
    if workers <= 1 or cases <= 1:
        return [write_case(out, seed, case, shape, affine, variation) for case in range(cases)]
    with process_pool(min(workers, cases)) as pool:
        return list(pool.map(write_case, *zip(*[(out, seed, case, shape, affine, variation)
                                               for case in range(cases)])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sensorium synth cardiac", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 64), metavar=("X", "Y", "Z"),
                        help="voxels per axis")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 2.0),
                        metavar=("SX", "SY", "SZ"), help="voxel size in mm (anisotropic like CT/MR stacks)")
    parser.add_argument("--variation", choices=sorted(VARIATIONS), default="default",
                        help="how much size, pose and shape vary between cases (HeartVariation)")
    parser.add_argument("--workers", type=int, default=1, help="cases written in parallel (processes)")
    args = parser.parse_args(argv)
    paths = generate(args.out, args.seed, args.cases, tuple(args.shape), tuple(args.spacing), args.variation,
                     args.workers)
    print(f"wrote {len(paths)} cardiac label volumes {tuple(args.shape)} at {tuple(args.spacing)} mm "
          f"to {args.out}")
    return 0
