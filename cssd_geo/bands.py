"""Which bands of a scene a model sees, and as what values: the one place that decides.

Training chooses (:func:`choose_bands`): the user's ``--bands`` / ``--exclude-bands`` first,
then bands the file or product flags bad (ENVI ``bbl``, product metadata), then bands with no
valid value, or valid in fewer than :data:`MIN_VALID_SHARE` of the pixels that have data. The
choice is a :class:`BandRecord`, saved in the model file. Prediction finds the same bands in
its scene (:func:`match_bands`): by wavelength where both know them, else by name, else by
index. Values are what the file means them to be: stored * scale + offset where it stores a
scale (:func:`prepare`). A pixel is valid when every kept band is valid.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from .errors import CssdError
from .io.scene import QUALITY_PREFIX, STATS_PIXELS, band_names, band_wavelengths, scene_nodata
from .progress import Progress

MIN_VALID_SHARE = 0.01  # a band valid in fewer than 1 % of the pixels that have data is dropped
PARTIAL_SHARE = 0.9  # a kept band valid in fewer than 90 % of them is reported: it costs pixels
WAVELENGTH_TOLERANCE_NM = 0.5  # the same band in two files of one sensor
_LISTED = 6  # bands named in one message


@dataclass(frozen=True)
class DroppedBand:
    """A band of the training scene the model does not use, and why."""

    band: int  # 1-based, in the scene file
    name: str | None
    wavelength: float | None
    reason: str


@dataclass
class BandRecord:
    """The bands and values a model was trained on; saved in its file as ``metadata["bands"]``."""

    kept: list[int]  # 1-based band indices in the training scene, in model input order
    scene_bands: int  # bands of the training scene
    names: list[str] | None = None  # of the kept bands
    wavelengths: list[float] | None = None  # nm, of the kept bands
    scaled: bool = False  # the model saw stored * scale + offset
    scale: list[float] | None = None  # of the kept bands, when scaled
    offset: list[float] | None = None
    dropped: list[DroppedBand] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the model file's metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BandRecord:
        """Read what :meth:`to_dict` wrote."""
        data = dict(data)
        data["dropped"] = [DroppedBand(**d) for d in data.get("dropped", [])]
        return cls(**data)


def describe(band: int, name: str | None, wavelength: float | None) -> str:
    """How messages name a band: its number, then its name and wavelength where known
    (``57 'B57' (1340.2 nm)``)."""
    return " ".join([str(band)] + ([repr(name)] if name else []) + ([f"({wavelength:.1f} nm)"] if wavelength else []))


def _listing(bands: Sequence[str]) -> str:
    more = len(bands) - _LISTED
    return ", ".join(bands[:_LISTED]) + (f" and {more} more" if more > 0 else "")


# --- --bands / --exclude-bands ---------------------------------------------------------------

_TERM = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:-\s*(\d+(?:\.\d*)?))?\s*(nm)?\s*$", re.IGNORECASE)


def parse_band_list(text: str, option: str, count: int, wavelengths: Sequence[float] | None) -> np.ndarray:
    """Which of ``count`` bands a ``--bands`` style list names: comma-separated 1-based
    indices and index ranges (``1-50,60``) or wavelength ranges in nm (``1340-1460``). A term
    is read as nm when it says so (``400-450nm``), has a decimal point, or names numbers above
    the band count; otherwise as band indices."""
    chosen = np.zeros(count, dtype=bool)
    for term in filter(None, (t.strip() for t in text.split(","))):
        match = _TERM.match(term)
        if match is None:
            raise CssdError(f"{option} {text}: cannot read {term!r}; give band numbers and ranges (1-50,60) "
                            "or wavelength ranges in nm (1340-1460,1790-1960)")
        lo_text, hi_text, unit = match.groups()
        lo, hi = float(lo_text), float(hi_text or lo_text)
        if hi < lo:
            raise CssdError(f"{option} {text}: range {term!r} runs backwards; write it low-high")
        in_nm = bool(unit) or "." in term or hi > count
        if in_nm:
            if wavelengths is None:
                raise CssdError(f"{option} {text}: {term!r} is a wavelength range but the scene has no band "
                                f"wavelengths; give band numbers 1-{count} instead")
            wl = np.asarray(wavelengths)
            hit = (wl >= lo) & (wl <= hi)
            if hi_text is None:  # one wavelength: the nearest band
                hit = np.abs(wl - lo) == np.abs(wl - lo).min()
        else:
            if lo < 1:
                raise CssdError(f"{option} {text}: band numbers start at 1")
            hit = np.zeros(count, dtype=bool)
            hit[int(lo) - 1:int(hi)] = True
        chosen |= hit
    return chosen


# --- training: the choice ---------------------------------------------------------------------

def choose_bands(scene: xr.DataArray, bands: str | None, exclude_bands: str | None, mask: dsa.Array | None,
                 scene_name: str, progress: Progress | None = None) -> BandRecord:
    """The bands a model trained on ``scene`` uses (see the module docstring); says which were
    dropped. ``mask`` ((y, x), True = left out) limits the pixels that count."""
    progress = progress or Progress()
    count = scene.sizes["band"]
    names, wavelengths = band_names(scene), band_wavelengths(scene)
    keep = np.ones(count, dtype=bool)
    reasons: dict[int, str] = {}

    def drop(which: np.ndarray, reason: str) -> None:
        for i in np.flatnonzero(which & keep):
            reasons[int(i)] = reason
        keep[which] = False

    if bands:
        drop(~parse_band_list(bands, "--bands", count, wavelengths), "not in --bands")
    if exclude_bands:
        drop(parse_band_list(exclude_bands, "--exclude-bands", count, wavelengths), "in --exclude-bands")
    if "bad_band" in scene.coords:
        drop(np.asarray(scene["bad_band"].values, dtype=bool), "flagged bad by the file")
    if not keep.any():
        raise CssdError(f"{scene_name}: no band is left after --bands/--exclude-bands and the file's bad-band "
                        "flags; keep at least three bands")
    valid, with_data = _band_validity(scene, keep, mask)
    if with_data == 0:
        raise CssdError(_no_data_message(scene, scene_name, mask))
    share = valid / with_data
    drop(valid == 0, "no valid value")
    drop(share < MIN_VALID_SHARE, f"valid in fewer than {MIN_VALID_SHARE:.0%} of the pixels")
    record = BandRecord(
        kept=[int(i) + 1 for i in np.flatnonzero(keep)], scene_bands=count,
        names=[names[i] for i in np.flatnonzero(keep)] if names else None,
        wavelengths=[wavelengths[i] for i in np.flatnonzero(keep)] if wavelengths else None,
        dropped=[DroppedBand(i + 1, names[i] if names else None, wavelengths[i] if wavelengths else None, r)
                 for i, r in sorted(reasons.items())])
    scale, offset = _scale_offset(scene)
    if scale is not None and offset is not None:
        record.scaled = True
        record.scale, record.offset = scale[keep].tolist(), offset[keep].tolist()
    _report(record, progress)
    usable = _pixels_valid_in(scene, keep, mask)
    if usable == 0:
        partial = [describe(i + 1, names[i] if names else None, wavelengths[i] if wavelengths else None)
                   + f" {share[i]:.0%}" for i in np.argsort(share) if keep[i] and share[i] < 1][:_LISTED]
        raise CssdError(f"{scene_name}: no pixel is valid in every kept band; the bands with the fewest valid "
                        f"pixels are {_listing(partial)}: leave them out with --exclude-bands")
    partial = [describe(i + 1, names[i] if names else None, wavelengths[i] if wavelengths else None)
               + f" {share[i]:.0%}" for i in np.flatnonzero(keep) if share[i] < PARTIAL_SHARE]
    if partial:
        progress.message(f"bands valid in fewer than {PARTIAL_SHARE:.0%} of the pixels with data (a pixel is used "
                         f"only where every kept band is valid): {_listing(partial)}; --exclude-bands drops them")
    return record


def _subsample(scene: xr.DataArray) -> int:
    return max(1, math.ceil(math.sqrt(scene.sizes["y"] * scene.sizes["x"] / STATS_PIXELS)))


def _valid_values(data: dsa.Array, nodata: float | None) -> dsa.Array:
    ok = dsa.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        ok = ok & (data != nodata)
    return ok


def _band_validity(scene: xr.DataArray, keep: np.ndarray, mask: dsa.Array | None) -> tuple[np.ndarray, int]:
    """Per band, valid pixels among a regular subsample; pixels with any valid kept band."""
    step = _subsample(scene)
    ok = _valid_values(scene.data[:, ::step, ::step], scene_nodata(scene))
    if mask is not None:
        ok = ok & ~mask[::step, ::step][None]
    per_band, with_data = dask.compute(ok.sum(axis=(1, 2)), ok[np.flatnonzero(keep)].any(axis=0).sum())
    return np.asarray(per_band), int(with_data)


def _pixels_valid_in(scene: xr.DataArray, keep: np.ndarray, mask: dsa.Array | None) -> int:
    step = _subsample(scene)
    ok = _valid_values(scene.data[np.flatnonzero(keep), ::step, ::step], scene_nodata(scene)).all(axis=0)
    if mask is not None:
        ok = ok & ~mask[::step, ::step]
    return int(ok.sum().compute())


def _no_data_message(scene: xr.DataArray, scene_name: str, mask: dsa.Array | None) -> str:
    nodata = scene_nodata(scene)
    if mask is not None:
        step = _subsample(scene)
        if bool(mask[::step, ::step].all().compute()):
            return f"{scene_name}: the masks leave out every pixel; check --mask and the product's quality layers"
    if nodata is not None:
        return (f"{scene_name}: every value of the kept bands is the nodata value {nodata:g} or not finite; check "
                "the scene's nodata value (e.g. gdal_edit.py -a_nodata) and --bands")
    return f"{scene_name}: every value of the kept bands is not finite (NaN or infinite); check the scene and --bands"


def _report(record: BandRecord, progress: Progress) -> None:
    if not record.dropped:
        return
    by_reason: dict[str, list[str]] = {}
    for d in record.dropped:
        by_reason.setdefault(d.reason, []).append(describe(d.band, d.name, d.wavelength))
    parts = [f"{len(b)} {reason} ({_listing(b)})" for reason, b in by_reason.items()]
    progress.message(f"bands: {len(record.kept)} of {record.scene_bands} kept; dropped " + "; ".join(parts))


def _scale_offset(scene: xr.DataArray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The file's per-band scale and offset, or (None, None) where it stores values as they are."""
    count = scene.sizes["band"]
    scale = np.asarray(scene["scale"].values, dtype=np.float64) if "scale" in scene.coords else np.ones(count)
    offset = np.asarray(scene["offset"].values, dtype=np.float64) if "offset" in scene.coords else np.zeros(count)
    if np.all(scale == 1.0) and np.all(offset == 0.0):
        return None, None
    return scale, offset


# --- prediction: the same bands in another scene ---------------------------------------------

def match_bands(scene: xr.DataArray, metadata: dict[str, Any], model_bands: int, scene_name: str,
                model_name: str) -> list[int]:
    """The 1-based bands of ``scene`` that give the model its inputs, in order; refuses a scene
    that lacks some (naming them) or stores its values differently."""
    count = scene.sizes["band"]
    names, wavelengths = band_names(scene), band_wavelengths(scene)
    if "bands" not in metadata:  # a model from before band records: every band, in order
        _check_all_bands(scene, metadata, model_bands, scene_name, model_name)
        return list(range(1, count + 1))
    record = BandRecord.from_dict(metadata["bands"])
    if record.wavelengths and wavelengths:
        wl = np.asarray(wavelengths)
        found = [int(np.argmin(np.abs(wl - w))) + 1 if np.abs(wl - w).min() <= WAVELENGTH_TOLERANCE_NM else None
                 for w in record.wavelengths]
    elif record.names and names:
        position = {n: i + 1 for i, n in enumerate(names)}
        found = [position.get(n) for n in record.names]
    elif count == record.scene_bands:
        found = list(record.kept)
    else:
        raise CssdError(f"{scene_name}: has {count} bands and neither band names nor wavelengths, but model "
                        f"{model_name} was trained on a {record.scene_bands}-band scene; predict on a scene from "
                        "the same sensor and band subset")
    missing = [describe(band, record.names[k] if record.names else None,
                        record.wavelengths[k] if record.wavelengths else None)
               for k, (band, f) in enumerate(zip(record.kept, found, strict=True)) if f is None]
    if missing:
        raise CssdError(f"{scene_name}: lacks {len(missing)} of the {len(found)} bands model {model_name} uses: "
                        f"{_listing(missing)}; predict on a scene from the same sensor with these bands")
    _check_scaling(scene, record, [f for f in found if f is not None], scene_name, model_name)
    return [f for f in found if f is not None]


def _check_scaling(scene: xr.DataArray, record: BandRecord, bands: list[int], scene_name: str,
                   model_name: str) -> None:
    scale, offset = _scale_offset(scene)
    if record.scaled and scale is None:
        raise CssdError(f"{scene_name}: stores its values without a scale, but model {model_name} was trained on "
                        "values scaled by the file's scale/offset (e.g. reflectance from integers); give the product "
                        "as delivered, or a copy that keeps its scale/offset metadata")
    if not record.scaled and scale is not None:
        used = np.asarray(bands) - 1
        raise CssdError(f"{scene_name}: stores a scale/offset (scale {scale[used][0]:g}, offset "
                        f"{offset[used][0] if offset is not None else 0:g}) but model {model_name} was trained on "
                        "values as stored; predict on a scene stored like the training scene")


def _check_all_bands(scene: xr.DataArray, metadata: dict[str, Any], model_bands: int, scene_name: str,
                     model_name: str) -> None:
    """The rule for a model without a band record: same count, names and wavelengths."""
    bands = scene.sizes["band"]
    if bands != model_bands:
        raise CssdError(f"{scene_name}: has {bands} bands but model {model_name} was trained on {model_bands}; "
                        "predict on a scene from the same sensor and band subset")
    wl_model, wl_scene = metadata.get("wavelengths"), band_wavelengths(scene)
    if wl_model and wl_scene:
        diff = np.abs(np.asarray(wl_model) - np.asarray(wl_scene))
        if diff.max() > WAVELENGTH_TOLERANCE_NM:
            i = int(diff.argmax())
            raise CssdError(f"{scene_name}: band {i + 1} is at {wl_scene[i]:.1f} nm but model {model_name} expects "
                            f"{wl_model[i]:.1f} nm; use a scene with the model's bands in the same order")
    names_model, names_scene = metadata.get("band_names"), band_names(scene)
    if names_model and names_scene and list(names_model) != list(names_scene):
        i = next(k for k, (a, b) in enumerate(zip(names_model, names_scene, strict=True)) if a != b)
        raise CssdError(f"{scene_name}: band {i + 1} is named {names_scene[i]!r} but model {model_name} expects "
                        f"{names_model[i]!r}; use a scene with the model's bands in the same order")


# --- the scene the model sees ----------------------------------------------------------------

def prepare(scene: xr.DataArray, bands: Sequence[int], mask: dsa.Array | None) -> xr.DataArray:
    """``scene`` reduced to ``bands`` (1-based), values scaled where the file stores a scale,
    and pixels under ``mask`` set to NaN; lazy. Without scaling or mask, only bands are
    selected and the values stay as stored (the engine reads nodata itself)."""
    quality = [c for c in scene.coords if str(c).startswith(QUALITY_PREFIX)]
    kept = scene.drop_vars(quality).isel(band=np.asarray(bands, dtype=int) - 1)
    scale, offset = _scale_offset(kept)
    if scale is None and mask is None:
        return kept
    data = kept.data
    invalid = ~_valid_values(data, scene_nodata(kept)).all(axis=0)
    if mask is not None:
        invalid = invalid | mask
    values = data.astype(np.float32)
    if scale is not None and offset is not None:
        values = values * scale.astype(np.float32)[:, None, None] + offset.astype(np.float32)[:, None, None]
    values = dsa.where(invalid[None], np.float32(np.nan), values)
    out = kept.copy(data=values)
    return out.rio.write_nodata(np.nan, encoded=False)
