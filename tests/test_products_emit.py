"""EMIT L2A reflectance granules opened as delivered (cssd_geo.io.products.emit)."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from affine import Affine

from cssd_geo import cli
from cssd_geo.io.products import emit as reader
from cssd_geo.io.products import find_reader
from cssd_geo.io.scene import open_scene
from cssd_geo.model.modelfile import read_model_metadata
from tests.product_fixtures import EXAMPLE_FIELDS, emit


@pytest.fixture(scope="session")
def granule(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return emit.write(tmp_path_factory.mktemp("emit"))


@pytest.fixture
def granule_copy(granule: Path, tmp_path: Path) -> Path:
    """The granule pair copied, to be changed by a test."""
    shutil.copytree(granule.parent, tmp_path / "emit")
    return tmp_path / "emit" / granule.name


def stored(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {"reflectance": f["reflectance"][()], "glt_x": f["location/glt_x"][()],
                "glt_y": f["location/glt_y"][()], "geotransform": f.attrs["geotransform"],
                "wavelengths": f["sensor_band_parameters/wavelengths"][()],
                "fwhm": f["sensor_band_parameters/fwhm"][()],
                "good": f["sensor_band_parameters/good_wavelengths"][()]}


def mask_path(granule: Path) -> Path:
    return granule.with_name(granule.name.replace("_RFL_", "_MASK_"))


def sensor_flag(granule: Path, name: str) -> np.ndarray:
    with h5py.File(mask_path(granule)) as f:
        names = [n.decode() for n in f["sensor_band_parameters/mask_bands"][()]]
        return f["mask"][:, :, names.index(name)] == 1


def through_glt(sensor: np.ndarray, glt_x: np.ndarray, glt_y: np.ndarray) -> np.ndarray:
    """What a (downtrack, crosstrack) flag image is on the GLT grid (False without a source)."""
    has = glt_x > 0
    return has & sensor[np.maximum(glt_y, 1) - 1, np.maximum(glt_x, 1) - 1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--quiet", *map(str, argv)])
    return code, capsys.readouterr().err.strip()


# --- the fixture is the product -------------------------------------------------------------

def test_fixture_has_the_product_layout(granule):
    xr = pytest.importorskip("xarray")
    root = xr.open_dataset(granule, engine="h5netcdf", mask_and_scale=False)
    assert root["reflectance"].dims == ("downtrack", "crosstrack", "bands")
    assert root["reflectance"].dtype == np.float32 and root["reflectance"].attrs["_FillValue"] == -9999
    assert root.attrs["title"] == "EMIT L2A Estimated Surface Reflectance 60 m V001"
    params = xr.open_dataset(granule, engine="h5netcdf", group="sensor_band_parameters", mask_and_scale=False)
    assert {n: (v.dims, v.dtype) for n, v in params.data_vars.items()} == {
        "wavelengths": (("bands",), np.float32), "fwhm": (("bands",), np.float32),
        "good_wavelengths": (("bands",), np.uint8)}
    location = xr.open_dataset(granule, engine="h5netcdf", group="location", mask_and_scale=False)
    assert location["glt_x"].dims == location["glt_y"].dims == ("ortho_y", "ortho_x")
    assert location["glt_x"].dtype == np.int32 and location["glt_x"].attrs["_FillValue"] == 0
    assert location["lat"].dims == ("downtrack", "crosstrack") and location["lat"].dtype == np.float64
    mask = xr.open_dataset(mask_path(granule), engine="h5netcdf", mask_and_scale=False)
    assert mask["mask"].dims == ("downtrack", "crosstrack", "bands") and mask["mask"].dtype == np.float32
    names = xr.open_dataset(mask_path(granule), engine="h5netcdf", group="sensor_band_parameters")
    assert list(names["mask_bands"].values) == emit.MASK_BANDS
    values = stored(granule)
    assert values["geotransform"][2] == values["geotransform"][4] == 0
    assert not (values["glt_x"] == np.arange(values["glt_x"].shape[1]) + 1).all()  # the GLT is not the identity
    assert 0 < int(emit.BAD.sum()) < 285 and values["good"].sum() == 285 - emit.BAD.sum()


# --- opening ----------------------------------------------------------------------------------

def test_granule_opens_on_its_glt_grid(granule):
    values = stored(granule)
    da = open_scene(granule)
    assert find_reader(str(granule)) is reader.READER and da.attrs["product"] == "EMIT L2A"
    assert da.dims == ("band", "y", "x")
    assert dict(da.sizes) == {"band": 285, "y": values["glt_x"].shape[0], "x": values["glt_x"].shape[1]}
    assert da.rio.crs.to_epsg() == 4326
    assert da.rio.transform() == Affine.from_gdal(*values["geotransform"])
    assert da["x"].values[0] == pytest.approx(values["geotransform"][0] + values["geotransform"][1] / 2)
    assert da.rio.nodata == -9999
    assert (da["band"].values == np.arange(1, 286)).all() and da["band_name"].values[0] == "band 1"
    np.testing.assert_array_equal(da["wavelength"].values, values["wavelengths"].astype(np.float64))
    np.testing.assert_array_equal(da["fwhm"].values, values["fwhm"].astype(np.float64))
    assert (da["scale"].values == 1.0).all() and (da["offset"].values == 0.0).all()
    assert da["bad_band"].dtype == bool and (da["bad_band"].values == (values["good"] == 0)).all()
    assert (da["bad_band"].values == emit.BAD).all()
    assert 1320 < da["wavelength"].values[da["bad_band"].values].min() < 1440


def test_other_files_are_not_emit_granules(granule, tmp_path):
    assert reader.matches(str(granule)) and reader.matches(str(mask_path(granule)))
    other = tmp_path / "EMIT_L2B_CH4ENH_002_20220903T163129_2224611_012.tif"
    other.write_bytes(b"")
    assert not reader.matches(str(other)) and not reader.matches(str(tmp_path / "scene.nc"))


@pytest.mark.parametrize("chunks", [16, 37, 512])
def test_pixels_are_the_sensor_pixels_the_glt_points_at(granule, chunks):
    values = stored(granule)
    glt_x, glt_y, sensor = values["glt_x"], values["glt_y"], values["reflectance"]
    ortho = open_scene(granule, chunks=chunks).data.compute()
    has = glt_x > 0
    assert 0 < has.sum() < has.size
    assert (ortho[:, ~has] == -9999).all()  # no source pixel: nodata
    np.testing.assert_array_equal(ortho[:, has], sensor[glt_y[has] - 1, glt_x[has] - 1].T)
    for y, x in [(10, 20), (40, 50), (60, 30), (25, 70)]:  # spot checks
        assert has[y, x]
        np.testing.assert_array_equal(ortho[:, y, x], sensor[glt_y[y, x] - 1, glt_x[y, x] - 1])
    assert (ortho[emit.BAD][:, has & (ortho[0] != -9999)] == np.float32(-0.01)).all()


def test_negative_glt_index_is_its_absolute_value(granule_copy):
    with h5py.File(granule_copy, "a") as f:
        glt_x, glt_y = f["location/glt_x"][()], f["location/glt_y"][()]
        flip = (glt_x > 0) & (np.add.outer(np.arange(glt_x.shape[0]), np.arange(glt_x.shape[1])) % 5 == 0)
        f["location/glt_x"][...] = np.where(flip, -glt_x, glt_x)
        f["location/glt_y"][...] = np.where(flip, -glt_y, glt_y)
        sensor = f["reflectance"][()]
    ortho = open_scene(granule_copy).data.compute()
    np.testing.assert_array_equal(ortho[:, flip], sensor[glt_y[flip] - 1, glt_x[flip] - 1].T)


# --- quality layers ---------------------------------------------------------------------------

def test_mask_granule_flags_are_quality_layers_through_the_glt(granule):
    values = stored(granule)
    da = open_scene(granule, chunks=32)
    layers = sorted(str(c) for c in da.coords if str(c).startswith("quality_"))
    assert layers == ["quality_cirrus", "quality_cloud", "quality_dilated_cloud", "quality_spacecraft"]
    assert hasattr(da["quality_cloud"].data, "dask") and da["quality_cloud"].dtype == bool
    cloud = through_glt(sensor_flag(granule, "Cloud flag"), values["glt_x"], values["glt_y"])
    assert 10 < cloud.sum() < 100
    np.testing.assert_array_equal(da["quality_cloud"].values, cloud)
    dilated = through_glt(sensor_flag(granule, "Dilated Cloud Flag"), values["glt_x"], values["glt_y"])
    np.testing.assert_array_equal(da["quality_dilated_cloud"].values, dilated)
    assert (dilated >= cloud).all() and dilated.sum() > cloud.sum()
    assert not da["quality_cirrus"].values.any() and not da["quality_spacecraft"].values.any()
    water = through_glt(sensor_flag(granule, "Water flag"), values["glt_x"], values["glt_y"])
    assert water.any() and not any(da[c].values[water].any() for c in layers)  # water is land cover


def test_version_2_layer_names_and_cirrus(granule_copy):
    values = stored(granule_copy)
    with h5py.File(mask_path(granule_copy), "a") as f:  # V002 spells "Cloud Flag", "Cirrus Flag"
        names = f["sensor_band_parameters/mask_bands"]
        names[0], names[1] = "Cloud Flag", "Cirrus Flag"
        f["mask"][5:8, 30:34, 1] = 1.0
        cirrus_sensor = f["mask"][:, :, 1] == 1
    da = open_scene(granule_copy)
    cirrus = through_glt(cirrus_sensor, values["glt_x"], values["glt_y"])
    assert cirrus.any()
    np.testing.assert_array_equal(da["quality_cirrus"].values, cirrus)
    assert da["quality_cloud"].values.any()


def test_mask_granule_of_another_version_is_found_and_none_means_no_layers(granule_copy):
    mask = mask_path(granule_copy)
    mask.rename(mask.with_name(mask.name.replace("_MASK_001_", "_MASK_002_")))
    assert open_scene(granule_copy)["quality_cloud"].values.any()
    mask.with_name(mask.name.replace("_MASK_001_", "_MASK_002_")).unlink()
    da = open_scene(granule_copy)
    assert not [c for c in da.coords if str(c).startswith("quality_")]


# --- lazy, chunk by chunk ---------------------------------------------------------------------

def test_reading_is_lazy_and_each_chunk_reads_its_source_window(granule, monkeypatch):
    reads: list[tuple[str, slice, slice]] = []
    original = reader._read_window

    def counting(dataset, rows, cols):
        reads.append((dataset.name, rows, cols))
        return original(dataset, rows, cols)

    monkeypatch.setattr(reader, "_read_window", counting)
    da = open_scene(granule, chunks=24)
    assert reads == []  # opening reads no reflectance and no mask
    data = da.data
    assert len(data.dask.layers[data.name]) == int(np.prod(data.numblocks))  # one task per chunk
    values = stored(granule)
    glt_x, glt_y = values["glt_x"], values["glt_y"]
    for i, j in [(0, 0), (1, 2), (2, 1)]:
        reads.clear()
        block = data.blocks[0, i, j].compute()
        window = (slice(24 * i, 24 * (i + 1)), slice(24 * j, 24 * (j + 1)))
        gx, gy = glt_x[window], glt_y[window]
        has = gx > 0
        assert block.shape == (285, *gx.shape)
        if not has.any():
            assert reads == []
            continue
        assert reads and {name for name, _, _ in reads} == {"/reflectance"}
        for _, rows, cols in reads:  # inside the sensor window this chunk's GLT points at
            assert gy[has].min() - 1 <= rows.start < rows.stop <= gy[has].max()
            assert gx[has].min() - 1 <= cols.start < cols.stop <= gx[has].max()
        read = sum((r.stop - r.start) * (c.stop - c.start) for _, r, c in reads)
        assert read <= (gy[has].max() - gy[has].min() + 1) * (gx[has].max() - gx[has].min() + 1)
    reads.clear()
    da["quality_cloud"].data.blocks[1, 1].compute()
    assert reads and {name for name, _, _ in reads} == {"/mask"}


def test_a_chunk_reads_a_strip_of_sensor_lines_at_a_time(granule, monkeypatch):
    reads: list[slice] = []
    original = reader._read_window
    monkeypatch.setattr(reader, "STRIP_LINES", 8)
    monkeypatch.setattr(reader, "_read_window", lambda d, r, c: reads.append(r) or original(d, r, c))
    values = stored(granule)
    ortho = open_scene(granule, chunks=-1).data.compute()
    assert len(reads) > 1 and all(r.stop - r.start <= 8 for r in reads)
    has = values["glt_x"] > 0
    np.testing.assert_array_equal(
        ortho[:, has], values["reflectance"][values["glt_y"][has] - 1, values["glt_x"][has] - 1].T)


# --- errors -------------------------------------------------------------------------------------

def test_rotated_glt_grid_is_refused(granule_copy, capsys, tmp_path):
    with h5py.File(granule_copy, "a") as f:
        gt = f.attrs["geotransform"]
        f.attrs["geotransform"] = np.array([gt[0], gt[1], 1e-5, gt[3], 1e-5, gt[5]])
    code, err = run_cli(capsys, "train", granule_copy, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"cssd-geo: error: {granule_copy}: the GLT grid's geotransform [")
    assert err.endswith("is not a north-up grid; cssd-geo maps north-up grids only: orthorectify the granule "
                        "with another tool and give the GeoTIFF")


def test_mask_granule_of_another_scene_is_refused(granule_copy, capsys, tmp_path):
    mask = mask_path(granule_copy)
    with h5py.File(mask, "a") as f:
        flags = f["mask"][()]
        del f["mask"]
        f.create_dataset("mask", data=flags[:-2])
    code, err = run_cli(capsys, "train", granule_copy, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and len(err.splitlines()) == 1
    assert err == (f"cssd-geo: error: {mask}: mask (62, 62, 8) with 8 layer names does not fit the reflectance's "
                   "64 x 62 sensor pixels; use the mask granule of the same scene, or move it away to map without "
                   "EMIT's cloud flags")


# --- through the CLI ----------------------------------------------------------------------------

def test_trains_and_predicts_on_the_glt_grid(granule, tmp_path, capsys):
    model, landcover = tmp_path / "m.cssd", tmp_path / "map.tif"
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "--shots", 5, "--epochs", 2,
                        "-o", model)
    assert code == 0, err
    values = stored(granule)
    meta = read_model_metadata(model)
    good = values["good"] == 1
    np.testing.assert_allclose(meta["wavelengths"], values["wavelengths"][good].astype(np.float64))
    code, err = run_cli(capsys, "predict", model, granule, "-o", landcover)
    assert code == 0, err
    da = open_scene(granule)
    with rasterio.open(landcover) as out:
        assert out.crs.to_epsg() == 4326 and out.transform == da.rio.transform() and out.shape == da.shape[1:]
        classes, nodata = out.read(1), out.nodata
    no_source = values["glt_x"] == 0
    assert (classes[no_source] == nodata).all()
    assert (classes[da["quality_dilated_cloud"].values] == nodata).all()
    assert (classes[~no_source & (da.data[0] != -9999).compute() & ~da["quality_dilated_cloud"].values]
            != nodata).all()


# --- damaged granules -----------------------------------------------------------------------

def _refused(capsys, granule, tmp_path) -> str:
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.cssd").exists()
    return err


@pytest.mark.parametrize(("level", "product", "what"), [("L1B", "RAD", "EMIT L1B radiance granule"),
                                                        ("L2A", "MASK", "EMIT L2A MASK granule")])
def test_other_emit_products_are_refused_by_name(tmp_path, capsys, level, product, what):
    granule = emit.write_l1b(tmp_path) if level == "L1B" else emit.write(tmp_path, level=level, product=product)
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2
    assert err == (f"cssd-geo: error: {granule}: {what}; cssd-geo reads EMIT L2A surface "
                   "reflectance (EMIT_L2A_RFL): use the L2A reflectance granule")


def test_damaged_granules_are_explained(granule_copy, capsys, tmp_path):
    with h5py.File(granule_copy, "a") as f:
        del f["location/glt_x"]
    assert _refused(capsys, granule_copy, tmp_path) == (
        f"cssd-geo: error: {granule_copy}: EMIT L2A granule without location/glt_x; the granule is "
        "incomplete: download it again")
    granule_copy.write_bytes(b"not netcdf")
    err = _refused(capsys, granule_copy, tmp_path)
    assert err.startswith(f"cssd-geo: error: {granule_copy}: not a readable NetCDF4/HDF5 file (")
    assert err.endswith("); download the granule again")


def test_unreadable_mask_granule_is_explained(granule_copy, capsys, tmp_path):
    mask_path(granule_copy).write_bytes(b"not netcdf")
    err = _refused(capsys, granule_copy, tmp_path)
    assert err.startswith(f"cssd-geo: error: {mask_path(granule_copy)}: not a readable EMIT mask granule (")
    assert err.endswith("download it again, or move it away to map without EMIT's cloud flags")


def test_glt_pointing_outside_the_sensor_pixels_is_refused(granule_copy, capsys, tmp_path):
    with h5py.File(granule_copy, "a") as f:
        glt = f["location/glt_x"][()]
        glt[0, 0] = 999
        f["location/glt_x"][...] = glt
    assert _refused(capsys, granule_copy, tmp_path) == (
        f"cssd-geo: error: {granule_copy}: the GLT points outside the 64 x 62 sensor pixels of the reflectance; "
        "the granule is damaged: download it again")


def test_glt_of_another_shape_is_refused(granule_copy, capsys, tmp_path):
    with h5py.File(granule_copy, "a") as f:
        glt = f["location/glt_y"][()]
        del f["location/glt_y"]
        f.create_dataset("location/glt_y", data=glt[:-1])
    err = _refused(capsys, granule_copy, tmp_path)
    assert err.startswith(f"cssd-geo: error: {granule_copy}: EMIT L2A granule with reflectance (64, 62, 285), "
                          "285 wavelengths and GLT ")
    assert err.endswith("expected (downtrack, crosstrack, bands) and two equal GLT images: download the granule "
                        "again")


def test_spatial_ref_that_is_not_a_crs_is_refused(granule_copy, capsys, tmp_path):
    with h5py.File(granule_copy, "a") as f:
        f.attrs["spatial_ref"] = "not a CRS"
    err = _refused(capsys, granule_copy, tmp_path)
    assert err.startswith(f"cssd-geo: error: {granule_copy}: the spatial_ref attribute is not a WKT CRS (")
    assert err.endswith("the granule is damaged: download it again")


def test_mask_granule_problems_are_explained(granule_copy, capsys, tmp_path):
    mask = mask_path(granule_copy)
    with h5py.File(mask, "a") as f:
        names = f["sensor_band_parameters/mask_bands"][()]
        del f["sensor_band_parameters/mask_bands"]
        f.create_dataset("sensor_band_parameters/mask_bands",
                         data=np.array([f"layer {i}" for i in range(len(names))], dtype=h5py.string_dtype()))
    err = _refused(capsys, granule_copy, tmp_path)
    assert err.startswith(f"cssd-geo: error: {mask}: none of the mask layers (layer 0, layer 1,")
    assert err.endswith("is a cloud, cirrus or spacecraft flag cssd-geo knows; download it again, or move it away "
                        "to map without EMIT's cloud flags")
    with h5py.File(mask, "a") as f:
        del f["sensor_band_parameters/mask_bands"]
    assert _refused(capsys, granule_copy, tmp_path) == (
        f"cssd-geo: error: {mask}: EMIT mask granule without sensor_band_parameters/mask_bands; download it again, "
        "or move it away to map without EMIT's cloud flags")
