"""The classic hyperspectral benchmark files as labelled scenes: Indian Pines (.npy or .mat),
Salinas-A (.mat) and the Berlin Urban Gradient subset (ENVI cube + land-cover polygons).

Anyone with those files can rerun the accuracy tables (benchmarks/accuracy.py):

    ip = cssd_geo.datasets.load("indian_pines", "path/to/data")
    ip.scene      # (band, y, x) DataArray, as open_scene gives
    ip.labels     # (y, x) class ids, 0 = unlabelled
    ip.classes    # [ClassInfo(id, name, color)]
    ip.fields()   # (y, x) ids of connected fields of one class, for spatially disjoint splits
    rows, cols, test = cssd_geo.sampling.few_shot_split(ip.labels, 16, seed=0)  # the random split
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .classes import ClassInfo, make_class_table
from .errors import CssdError

INDIAN_PINES_CLASSES = {
    1: "Alfalfa", 2: "Corn-notill", 3: "Corn-mintill", 4: "Corn", 5: "Grass-pasture", 6: "Grass-trees",
    7: "Grass-pasture-mowed", 8: "Hay-windrowed", 9: "Oats", 10: "Soybean-notill", 11: "Soybean-mintill",
    12: "Soybean-clean", 13: "Wheat", 14: "Woods", 15: "Buildings-Grass-Trees-Drives", 16: "Stone-Steel-Towers",
}
# Salinas-A keeps the class ids of the full Salinas scene
SALINAS_A_CLASSES = {1: "Brocoli_green_weeds_1", 10: "Corn_senesced_green_weeds", 11: "Lettuce_romaine_4wk",
                     12: "Lettuce_romaine_5wk", 13: "Lettuce_romaine_6wk", 14: "Lettuce_romaine_7wk"}
DATASETS = ("indian_pines", "salinas_a", "berlin")


@dataclass
class LabelledScene:
    """A scene with a reference class raster on its grid."""

    name: str
    scene: xr.DataArray
    labels: np.ndarray
    classes: list[ClassInfo]

    def fields(self) -> np.ndarray:
        """Connected fields (8-connected pixels of one class: diagonal neighbours belong to the
        same field), numbered from 1; 0 = unlabelled."""
        from scipy import ndimage

        out = np.zeros(self.labels.shape, dtype=np.int32)
        for c in self.classes:
            components, n = ndimage.label(self.labels == c.id, structure=np.ones((3, 3), dtype=bool))
            out[components > 0] = components[components > 0] + out.max()
        return out


def load(name: str, data: str | os.PathLike) -> LabelledScene:
    """One of ``DATASETS`` from the folder that holds its sub-folder (e.g. ../shared/data)."""
    loaders = {"indian_pines": indian_pines, "salinas_a": salinas_a, "berlin": berlin}
    if name not in loaders:
        raise CssdError(f"dataset {name!r}: unknown; choose one of {', '.join(DATASETS)}")
    return loaders[name](os.fspath(data))


def load_mat(path: str, variable: str | None = None) -> np.ndarray:
    """A variable of a MATLAB .mat file (v5; the only array in it when ``variable`` is None)."""
    from scipy.io import loadmat

    if not os.path.exists(path):
        raise CssdError(f"{path}: file not found; check the path")
    try:
        content = loadmat(path)
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise CssdError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 or read it with h5py") from exc
    arrays = {k: v for k, v in content.items() if not k.startswith("__")}
    if variable is None:
        if len(arrays) != 1:
            raise CssdError(f"{path}: holds {sorted(arrays)}; name the variable to use")
        variable = next(iter(arrays))
    if variable not in arrays:
        raise CssdError(f"{path}: no variable {variable!r}; it holds {sorted(arrays)}")
    return np.asarray(arrays[variable])


def array_scene(cube: np.ndarray, name: str, band_last: bool = True) -> xr.DataArray:
    """A cube held in memory as a scene (band, y, x) on a unit pixel grid without a CRS, as
    the classic benchmark files have none."""
    import rioxarray  # noqa: F401  (registers .rio)
    from affine import Affine

    data = np.moveaxis(cube, -1, 0) if band_last else cube
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": np.arange(1, data.shape[0] + 1), "y": np.arange(data.shape[1]) + 0.5,
                              "x": np.arange(data.shape[2]) + 0.5}, name="scene")
    da = da.rio.write_transform(Affine.identity())  # pixel (row, col) at y = row + 0.5, x = col + 0.5
    da.attrs["source"] = name
    return da.chunk({"band": -1, "y": 256, "x": 256})


def _classes(table: dict[int, str]) -> list[ClassInfo]:
    ids = sorted(table)
    return make_class_table(ids, [table[i] for i in ids])


def indian_pines(data: str) -> LabelledScene:
    """Indian Pines, 145 x 145 x 200 corrected bands, 16 classes (10,249 labelled pixels)."""
    folder = os.path.join(data, "indian_pines")
    npy = os.path.join(folder, "Indian_pines_corrected.npy")
    cube = np.load(npy) if os.path.exists(npy) else \
        load_mat(os.path.join(folder, "Indian_pines_corrected.mat"), "indian_pines_corrected")
    gt_npy = os.path.join(folder, "Indian_pines_gt.npy")
    gt = np.load(gt_npy) if os.path.exists(gt_npy) else load_mat(os.path.join(folder, "Indian_pines_gt.mat"),
                                                                    "indian_pines_gt")
    return LabelledScene("indian_pines", array_scene(cube, "indian_pines"), gt.astype(np.int32),
                         _classes(INDIAN_PINES_CLASSES))


def salinas_a(data: str) -> LabelledScene:
    """Salinas-A, 83 x 86 x 204 corrected bands, 6 classes (5,348 labelled pixels)."""
    folder = os.path.join(data, "salinas_a")
    cube = load_mat(os.path.join(folder, "SalinasA_corrected.mat"), "salinasA_corrected")
    gt = load_mat(os.path.join(folder, "SalinasA_gt.mat"), "salinasA_gt")
    return LabelledScene("salinas_a", array_scene(cube, "salinas_a"), gt.astype(np.int32),
                         _classes(SALINAS_A_CLASSES))


def berlin(data: str, class_field: str = "Level_2_ID") -> LabelledScene:
    """The EnMAP Berlin Urban Gradient subset, 60 x 80 x 177 (EPSG:32633, 30 m), and its land-
    cover polygons rasterised on its grid (pixel centres): 6 classes, 832 labelled pixels."""
    from .io.scene import open_scene, scene_grid
    from .io.vector import rasterize_labels, read_labels

    folder = os.path.join(data, "berlin_urban_gradient")
    scene = open_scene(os.path.join(folder, "EnMAP_BerlinUrbanGradient.bsq"))
    grid = scene_grid(scene)
    table = read_labels(os.path.join(folder, "LandCov_BerlinUrbanGradient.shp"), grid.crs, class_field)
    raster = rasterize_labels(table, grid)
    labels = np.zeros((grid.height, grid.width), dtype=np.int32)
    ids = np.array([c.id for c in table.classes])
    labels[raster.rows, raster.cols] = ids[raster.index]
    return LabelledScene("berlin", scene, labels, table.classes)
