import gzip

import numpy as np
import pytest
import xarray as xr

import cssd_geo
from cssd_geo.errors import CssdError
from cssd_geo.tiling import read_window, reflect_index
from tests.conftest import CRS, ORIGIN, PIXEL, make_cube, write_scene


def test_geotiff_scene(tmp_path):
    cube = make_cube(20, 25, 7)
    cube[:, 3, 4] = -99
    path = write_scene(tmp_path / "s.tif", cube, nodata=-99)
    da = cssd_geo.open_scene(path, chunks=8)
    assert da.dims == ("band", "y", "x") and da.shape == (7, 20, 25)
    assert da.chunks[1][0] == 8
    assert da.rio.crs.to_string() == CRS
    assert da.rio.transform().c == ORIGIN[0] and da.rio.transform().a == PIXEL
    assert da.rio.nodata == -99
    assert list(da["band_name"].values[:2]) == ["B1", "B2"]
    assert da["wavelength"].values[1] == pytest.approx(460.0)
    np.testing.assert_array_equal(da.values, cube)


def _write_envi(folder, cube, compress=False):
    bands, lines, samples = cube.shape
    raw = cube.astype("<i2").tobytes()
    (folder / "s.bsq").write_bytes(gzip.compress(raw) if compress else raw)
    wl = ", ".join(f"{0.45 + 0.01 * i:.3f}" for i in range(bands))
    (folder / "s.hdr").write_text(
        "ENVI\n"
        f"samples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\n"
        f"file type = ENVI Standard\ndata type = 2\ninterleave = bsq\nbyte order = 0\n"
        f"file compression = {1 if compress else 0}\n"
        f"map info = {{UTM, 1.000, 1.000, {ORIGIN[0]}, {ORIGIN[1]}, 30.0, 30.0, 33, North, WGS-84, units=Meters}}\n"
        "data ignore value = -99\n"
        f"wavelength units = Micrometers\nwavelength = {{{wl}}}\n")
    return str(folder / "s.bsq")


@pytest.mark.parametrize("compress", [False, True])
def test_envi_scene_keeps_wavelengths(tmp_path, compress):
    cube = make_cube(10, 12, 5)
    da = cssd_geo.open_scene(_write_envi(tmp_path, cube, compress))
    assert da.shape == (5, 10, 12)
    assert da.rio.crs.to_epsg() == 32633
    assert da["wavelength"].values == pytest.approx([450, 460, 470, 480, 490])
    assert da.rio.nodata == -99
    np.testing.assert_array_equal(da.values, cube)


def test_zarr_scene(tmp_path):
    cube = make_cube(10, 12, 4).astype("float32")
    ys = ORIGIN[1] - PIXEL * (np.arange(10) + 0.5)
    xs = ORIGIN[0] + PIXEL * (np.arange(12) + 0.5)
    da = xr.DataArray(cube, dims=("wl", "y", "x"), coords={"y": ys, "x": xs,
                                                              "wavelength": ("wl", [500.0, 600, 700, 800])})
    da = da.rio.write_crs(CRS)
    da.to_dataset(name="reflectance").to_zarr(tmp_path / "s.zarr")
    scene = cssd_geo.open_scene(tmp_path / "s.zarr", chunks=4)
    assert scene.dims == ("band", "y", "x") and scene.shape == (4, 10, 12)
    assert scene.rio.crs.to_string() == CRS
    assert scene.rio.transform().c == pytest.approx(ORIGIN[0])
    assert scene["wavelength"].values[2] == 700
    np.testing.assert_array_equal(scene.values, cube)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CssdError, match="not found"):
        cssd_geo.open_scene(tmp_path / "nope.tif")
    (tmp_path / "notes.tif").write_text("hello")
    with pytest.raises(CssdError, match="not a raster"):
        cssd_geo.open_scene(tmp_path / "notes.tif")


def test_reflect_index_matches_numpy_pad():
    for size in (1, 2, 5, 9):
        idx = np.arange(-13, size + 13)
        expected = np.pad(np.arange(size), 13, mode="reflect") if size > 1 else np.zeros(size + 26, int)
        np.testing.assert_array_equal(reflect_index(idx, size), expected)


def test_read_window_reflects_and_masks(tmp_path):
    cube = make_cube(9, 11, 3)
    cube[:, 0, 0] = -99
    da = cssd_geo.open_scene(write_scene(tmp_path / "s.tif", cube, nodata=-99))
    block = read_window(da, -4, 13, -3, 14)
    expected = np.pad(cube.astype(np.float32), ((0, 0), (4, 4), (3, 3)), mode="reflect")
    expected[:, expected[0] == -99] = np.nan
    np.testing.assert_array_equal(block, expected)
