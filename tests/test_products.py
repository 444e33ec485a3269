"""Sensor products opened as delivered (cssd_geo.io.products): EnMAP L2A, PRISMA L2D, EMIT L2A."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from cssd_geo import cli
from cssd_geo.io.scene import open_scene
from cssd_geo.model.modelfile import read_model_metadata
from tests.product_fixtures import EXAMPLE_FIELDS, emit, enmap, prisma


@pytest.fixture(scope="module")
def enmap_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return enmap.write(tmp_path_factory.mktemp("enmap"))


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = cli.main(["--quiet", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("which", ["folder", "METADATA.XML", "SPECTRAL_IMAGE.TIF"])
def test_enmap_l2a_opens_with_its_band_characterisation_and_quality_layers(enmap_product, which):
    path = enmap_product if which == "folder" else next(enmap_product.glob(f"*-{which}"))
    da = open_scene(path)
    assert da.attrs["product"] == "EnMAP L2A"
    assert dict(da.sizes) == {"band": 224, "y": 96, "x": 96}
    with rasterio.open(next(enmap_product.glob("*-SPECTRAL_IMAGE.TIF"))) as ds:
        assert da.rio.crs == ds.crs and da.rio.transform() == ds.transform
        stored = ds.read(window=rasterio.windows.Window(30, 20, 3, 2))
    assert da.rio.nodata == -32768
    assert np.allclose(da["wavelength"].values, np.round(enmap.WAVELENGTHS, 3))
    assert da["fwhm"].values[0] == 7.5 and da["fwhm"].values[-1] == 10.0
    assert (da["scale"].values == enmap.GAIN).all() and (da["offset"].values == 0).all()
    np.testing.assert_array_equal(da.data[:, 20:22, 30:33].compute(), stored)  # values as stored
    cloud = np.zeros((96, 96), dtype=bool)
    cloud[enmap.CLOUD] = True
    np.testing.assert_array_equal(da["quality_cloud"].values, cloud)
    assert da["quality_cloud_shadow"].values.sum() == 4 and not da["quality_haze"].values.any()


def test_enmap_trains_and_predicts_as_delivered(enmap_product, tmp_path, capsys):
    model, landcover = tmp_path / "m.cssd", tmp_path / "map.tif"
    code, err = run_cli(capsys, "train", enmap_product, "--labels", EXAMPLE_FIELDS, "-o", model, "--shots", 5,
                        "--epochs", 2)
    assert code == 0, err
    assert "bands: 218 of 224 kept; dropped 6 no valid value (130 'band 130'" in err
    meta = read_model_metadata(model)
    kept = [b for b in range(1, 225) if b not in enmap.DEAD_BANDS]
    assert meta["bands"]["kept"] == kept and meta["bands"]["scaled"] is True
    assert np.allclose(meta["wavelengths"], np.round(enmap.WAVELENGTHS[np.asarray(kept) - 1], 3))
    assert min(meta["training_pixels"]["rows"]) >= 0
    code, err = run_cli(capsys, "predict", model, enmap_product, "-o", landcover)
    assert code == 0, err
    with rasterio.open(landcover) as out, rasterio.open(next(enmap_product.glob("*-SPECTRAL_IMAGE.TIF"))) as src:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        classes = out.read(1)
    assert (classes[enmap.CLOUD] == 0).all()  # cloud: nodata (0) in the map
    assert (classes[enmap.GAP] == 0).all()  # the nodata stripe stays nodata
    assert (classes[60:, :] != 0).all()
    code, err = run_cli(capsys, "predict", model, enmap_product, "-o", tmp_path / "all.tif", "--no-product-masks")
    assert code == 0, err
    with rasterio.open(tmp_path / "all.tif") as out:
        assert (out.read(1)[enmap.CLOUD] != 0).all()


def test_enmap_radiance_level_is_refused_by_name(tmp_path, capsys):
    product = enmap.write(tmp_path, level="L1C")
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {product}: EnMAP L1C product (radiance); cssd-geo reads EnMAP L2A "
                           "(surface reflectance): order or process the L2A product")


def test_incomplete_enmap_products_are_explained(tmp_path, capsys):
    product = enmap.write(tmp_path / "a")
    image = next(product.glob("*-SPECTRAL_IMAGE.TIF"))
    metadata = next(product.glob("*-METADATA.XML"))
    text = metadata.read_text()
    metadata.write_text(text.replace("<bandID number=\"224\">", "<bandID number=\"224\" broken"))
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and err.startswith(f"cssd-geo: error: {metadata}: not readable XML (") and \
        err.strip().endswith("; download the product again"), err
    first = text.index("<bandID number=\"224\"")
    metadata.write_text(text[:first] + text[text.index("</bandID>", first) + len("</bandID>"):])
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert err.strip() == (f"cssd-geo: error: {metadata}: describes 223 bands but {image.name} has 224; the product "
                           "is inconsistent: download it again")
    image.unlink()
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert err.strip() == (f"cssd-geo: error: {product}: EnMAP L2A folder without its SPECTRAL_IMAGE.TIF; the "
                           "product is incomplete: download it again (cssd-geo reads the GeoTIFF delivery format)")
    assert not (tmp_path / "m.cssd").exists()


def test_enmap_quality_layer_off_the_grid_is_explained(tmp_path, capsys):
    product = enmap.write(tmp_path)
    cloud = next(product.glob("*-QL_QUALITY_CLOUD.TIF"))
    with rasterio.open(cloud) as ds:
        profile = ds.profile
    profile.update(width=50, height=50)
    with rasterio.open(cloud, "w", **profile) as ds:
        ds.write(np.zeros((1, 50, 50), dtype=np.uint8))
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {cloud}: the quality layer is not on the spectral image's grid; "
                           "the product is inconsistent: download it again")


# --- PRISMA L2D --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prisma_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prisma.write(tmp_path_factory.mktemp("prisma"))


def test_prisma_l2d_joins_vnir_and_swir_in_wavelength_order(prisma_product):
    import h5py

    da = open_scene(prisma_product)
    assert da.attrs["product"] == "PRISMA L2D"
    assert da.rio.crs.to_epsg() == 32616 and da.rio.transform() == enmap_grid()
    wl = da["wavelength"].values
    vnir = np.sort(prisma.VNIR_CW[(prisma.VNIR_CW > 0) & (prisma.VNIR_CW < 950)])
    swir = np.sort(prisma.SWIR_CW[prisma.SWIR_CW >= 950])
    np.testing.assert_allclose(wl, np.concatenate([vnir, swir]), rtol=1e-6)  # the overlap rule: VNIR below 950 nm
    assert (np.diff(wl) > 0).all() and da.rio.nodata == 0
    bad = da["bad_band"].values
    assert bad.sum() == 1 and wl[bad][0] == pytest.approx(prisma.SWIR_CW[prisma.INVALID_SWIR], rel=1e-6)
    low, high = prisma.SCALE["Swir"]
    assert da["scale"].values[-1] == pytest.approx((high - low) / 65535) and da["offset"].values[-1] == low
    with h5py.File(prisma_product) as f:  # stored values: SWIR cube (rows, bands, cols), longest wavelength first
        stored = f["HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/SWIR_Cube"][50, :, 60]
    k = int(np.argmin(np.abs(prisma.SWIR_CW - wl[-1])))
    assert int(da.data[-1, 50, 60].compute()) == int(stored[k])


def enmap_grid():
    """The 30 m grid the PRISMA fixture is laid on (the example scene's origin)."""
    from affine import Affine

    return Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4484000.0)


def test_prisma_trains_and_predicts_as_delivered(prisma_product, tmp_path, capsys):
    model, landcover = tmp_path / "m.cssd", tmp_path / "map.tif"
    code, err = run_cli(capsys, "train", prisma_product, "--labels", EXAMPLE_FIELDS, "-o", model, "--shots", 5,
                        "--epochs", 2)
    assert code == 0, err
    assert "dropped 1 flagged bad by the file" in err
    meta = read_model_metadata(model)
    assert meta["bands"]["scaled"] is True and len(meta["wavelengths"]) == 222
    code, err = run_cli(capsys, "predict", model, prisma_product, "-o", landcover)
    assert code == 0, err
    with rasterio.open(landcover) as out:
        assert out.crs.to_epsg() == 32616 and out.transform == enmap_grid() and out.shape == (96, 96)
        classes = out.read(1)
    assert (classes[prisma.FILL_ROWS] == 0).all() and (classes[60:] != 0).all()


def test_prisma_other_levels_are_refused_by_name(tmp_path, capsys):
    product = prisma.write(tmp_path, level="L2C")
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {product}: PRISMA L2C product (not geocoded); cssd-geo reads PRISMA L2D "
                           "(geocoded surface reflectance): order or process the L2D product")


def test_damaged_prisma_files_are_explained(tmp_path, capsys):
    import h5py

    product = prisma.write(tmp_path / "a")
    with h5py.File(product, "a") as f:
        del f.attrs["Epsg_Code"]
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {product}: PRISMA L2D file without Epsg_Code; the product is "
                           "incomplete: download it again")
    product.write_bytes(b"not hdf5")
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and err.startswith(f"cssd-geo: error: {product}: not a readable HDF5 file (") and \
        err.strip().endswith("); download the product again"), err


# --- EMIT L2A ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emit_granule(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return emit.write(tmp_path_factory.mktemp("emit"))


def test_emit_l2a_is_orthorectified_through_its_glt(emit_granule):
    import h5py

    da = open_scene(emit_granule, chunks=32)
    with h5py.File(emit_granule) as f:
        glt_x, glt_y = f["location/glt_x"][:], f["location/glt_y"][:]
        sensor = f["reflectance"][:]
        gt = f.attrs["geotransform"]
    assert da.attrs["product"] == "EMIT L2A"
    assert da.rio.crs.to_epsg() == 4326 and tuple(da.rio.transform().to_gdal()) == pytest.approx(tuple(gt))
    assert dict(da.sizes) == {"band": 285, "y": glt_x.shape[0], "x": glt_x.shape[1]}
    assert da.data.numblocks[1:] == (-(-glt_x.shape[0] // 32), -(-glt_x.shape[1] // 32))  # chunk by chunk
    np.testing.assert_allclose(da["wavelength"].values, emit.WAVELENGTHS.astype(np.float32))
    assert (da["bad_band"].values == emit.BAD).all()
    values = da.data[:, :, :].compute()
    has = glt_x > 0
    assert (values[:, ~has] == -9999).all()  # no source: fill (nodata)
    for y, x in zip(*np.nonzero(has)[:2], strict=True):
        if (y * 7 + x) % 97 == 0:  # spot-check pixels all over the grid
            np.testing.assert_array_equal(values[:, y, x], sensor[glt_y[y, x] - 1, glt_x[y, x] - 1])
    cloud = np.zeros(sensor.shape[:2], dtype=bool)
    cloud[emit.CLOUD] = True
    expected = has & cloud[np.maximum(glt_y, 1) - 1, np.maximum(glt_x, 1) - 1]
    np.testing.assert_array_equal(da["quality_cloud"].values, expected)
    assert not da["quality_cirrus"].values.any()


def test_emit_reads_reflectance_only_when_computed(tmp_path):
    import h5py

    granule = emit.write(tmp_path)
    da = open_scene(granule)
    with h5py.File(granule, "a") as f:  # changed after opening: a lazy reader sees the change
        f["reflectance"][...] = 0.25
    values = da.data[10].compute()
    assert set(np.unique(values)) <= {np.float32(0.25), np.float32(-9999.0)}


def test_emit_trains_and_predicts_on_the_glt_grid(emit_granule, tmp_path, capsys):
    model, landcover = tmp_path / "m.cssd", tmp_path / "map.tif"
    code, err = run_cli(capsys, "train", emit_granule, "--labels", EXAMPLE_FIELDS, "-o", model, "--shots", 5,
                        "--epochs", 2)
    assert code == 0, err
    assert f"dropped {int(emit.BAD.sum())} flagged bad by the file" in err
    meta = read_model_metadata(model)
    assert np.allclose(meta["wavelengths"], emit.WAVELENGTHS[~emit.BAD].astype(np.float32))
    code, err = run_cli(capsys, "predict", model, emit_granule, "-o", landcover)
    assert code == 0, err
    da = open_scene(emit_granule)
    with rasterio.open(landcover) as out:
        assert out.crs.to_epsg() == 4326 and out.transform == da.rio.transform() and out.shape == da.shape[1:]
        classes, nodata = out.read(1), out.nodata
    assert (classes[da["quality_cloud"].values] == nodata).all()
    assert (classes[(da.data[0] == -9999).compute()] == nodata).all()


@pytest.mark.parametrize(("level", "product", "what"), [("L1B", "RAD", "EMIT L1B radiance granule"),
                                                        ("L2A", "MASK", "EMIT L2A MASK granule")])
def test_emit_other_products_are_refused_by_name(tmp_path, capsys, level, product, what):
    granule = emit.write(tmp_path, level=level, product=product)
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {granule}: {what}; cssd-geo reads EMIT L2A surface reflectance "
                           "(EMIT_L2A_RFL): use the L2A reflectance granule")


def test_damaged_emit_granules_are_explained(tmp_path, capsys):
    import h5py

    granule = emit.write(tmp_path)
    with h5py.File(granule, "a") as f:
        del f["location/glt_x"]
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert err.strip() == (f"cssd-geo: error: {granule}: EMIT L2A granule without location/glt_x; the granule is "
                           "incomplete: download it again")
    granule.write_bytes(b"not netcdf")
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and err.startswith(f"cssd-geo: error: {granule}: not a readable NetCDF4/HDF5 file (")


def test_unreadable_emit_mask_granule_is_explained(tmp_path, capsys):
    granule = emit.write(tmp_path)
    mask = tmp_path / emit.GRANULE.format(level="L2A", product="MASK")
    mask.write_bytes(b"not netcdf")
    code, err = run_cli(capsys, "train", granule, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and err.startswith(f"cssd-geo: error: {mask}: not a readable EMIT mask granule (") and \
        err.strip().endswith("download it again, or move it away to map without EMIT's cloud flags"), err
