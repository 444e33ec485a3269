"""EnMAP L2A and PRISMA L2D products opened as delivered (cssd_geo.io.products.enmap, .prisma)."""
from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as dsa
import h5py
import numpy as np
import pytest
import rasterio
from affine import Affine

from cssd_geo import cli
from cssd_geo.io.products import enmap as enmap_reader
from cssd_geo.io.products import find_reader
from cssd_geo.io.products import prisma as prisma_reader
from cssd_geo.io.scene import open_scene
from cssd_geo.masks import quality_layers
from cssd_geo.model.modelfile import read_model_metadata
from tests.product_fixtures import EXAMPLE_FIELDS, enmap, grid_30m, prisma

EXAMPLE_GRID_30M = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4484000.0)  # the example scene's corner, 30 m


@pytest.fixture(scope="session")
def enmap_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return enmap.write(tmp_path_factory.mktemp("enmap"))


@pytest.fixture(scope="session")
def prisma_product(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prisma.write(tmp_path_factory.mktemp("prisma"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--quiet", *map(str, argv)])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.strip().splitlines() == [f"cssd-geo: error: {message}"], err


# --- EnMAP L2A -----------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["folder", "METADATA.XML", "SPECTRAL_IMAGE.TIF"])
def test_enmap_l2a_opens_on_its_grid_with_its_band_characterisation(enmap_product, which):
    path = enmap_product if which == "folder" else next(enmap_product.glob(f"*-{which}"))
    assert find_reader(str(path)) is enmap_reader.READER
    da = open_scene(path)
    transform, height, width = grid_30m()
    assert da.attrs["product"] == "EnMAP L2A"
    assert dict(da.sizes) == {"band": 224, "y": height, "x": width} == {"band": 224, "y": 97, "x": 97}
    assert isinstance(da.data, dsa.Array) and da.dtype == np.int16
    with rasterio.open(next(enmap_product.glob("*-SPECTRAL_IMAGE.TIF"))) as ds:
        assert da.rio.crs == ds.crs and da.rio.crs.to_epsg() == 32616
        assert da.rio.transform() == ds.transform == transform == EXAMPLE_GRID_30M
    assert da["x"].values[0] == 500015.0 and da["y"].values[0] == 4483985.0  # pixel centres
    np.testing.assert_array_equal(da["band"].values, np.arange(1, 225))
    wavelengths = da["wavelength"].values
    assert (np.diff(wavelengths) > 0).all()
    np.testing.assert_array_equal(wavelengths, enmap.WAVELENGTHS)
    assert wavelengths[0] == 418.416 and wavelengths[129] == 1330.86 and wavelengths[-1] == 2445.3
    np.testing.assert_array_equal(da["fwhm"].values, enmap.FWHM)
    assert (da["scale"].values == 0.0001).all() and (da["offset"].values == 0.0).all()
    assert da.rio.nodata == -32768
    assert da["band_name"].values[0] == "band 1" and da["band_name"].values[129] == "band 130"
    assert "bad_band" not in da.coords  # EnMAP flags no band: its empty bands are found by their values


def test_enmap_values_round_trip_as_stored(enmap_product):
    da = open_scene(enmap_product)
    image = next(enmap_product.glob("*-SPECTRAL_IMAGE.TIF"))
    with rasterio.open(image) as ds:
        window = ds.read(window=rasterio.windows.Window(col_off=30, row_off=20, width=3, height=2))
    np.testing.assert_array_equal(da.data[:, 20:22, 30:33].compute(), window)
    written = enmap.spectral_image()
    for row, col in [(0, 0), (10, 50), (60, 90), (96, 96)]:
        np.testing.assert_array_equal(da.data[:, row, col].compute(), written[:, row, col])
    example = enmap.example_cube()  # pixel (10, 50) lies on example pixel (15, 75)
    assert written[0, 10, 50] == np.round(example.at_wavelengths(enmap.WAVELENGTHS[:1])[0, 15, 75] / enmap.GAIN)
    values = da.data.compute()
    dead = np.asarray(enmap.DEAD_BANDS) - 1
    assert (values[dead] == -32768).all()  # the water-vapour bands: nodata everywhere
    assert (values[(slice(None), *enmap.GAP)] == -32768).all()  # the stripe between two valid areas
    alive = np.setdiff1d(np.arange(224), dead)
    assert (values[alive][:, :46] != -32768).all() and (values[alive][:, 49:] != -32768).all()
    assert 500 < values[alive].mean() < 9000  # reflectance x 10000


def test_enmap_quality_layers_flag_the_pixels_the_product_flags(enmap_product):
    da = open_scene(enmap_product)
    flagged = {"cloud": enmap.CLOUD, "cloud_shadow": enmap.CLOUD_SHADOW, "haze": enmap.HAZE,
               "cirrus": enmap.CIRRUS, "snow": None}
    assert sorted(quality_layers(da)) == sorted(flagged)  # not QL_PIXELMASK: that one is per band
    for name, where in flagged.items():
        layer = da[f"quality_{name}"]
        assert layer.dims == ("y", "x") and isinstance(layer.data, dsa.Array) and layer.dtype == bool
        expected = np.zeros((da.sizes["y"], da.sizes["x"]), dtype=bool)
        if where is not None:
            expected[where] = True
        np.testing.assert_array_equal(layer.values, expected, err_msg=name)


def test_enmap_cloud_optimised_delivery_opens_the_same(enmap_product, tmp_path):
    cog = enmap.write(tmp_path, cog=True)
    image = next(cog.glob("*-SPECTRAL_IMAGE_COG.TIF"))
    for path in (cog, image):
        da = open_scene(path)
        assert da.attrs["product"] == "EnMAP L2A" and da.sizes["band"] == 224
        assert sorted(quality_layers(da)) == ["cirrus", "cloud", "cloud_shadow", "haze", "snow"]
        assert da["quality_cloud"].values[enmap.CLOUD].all()
    np.testing.assert_array_equal(da.data[:, 33, 44].compute(), open_scene(enmap_product).data[:, 33, 44].compute())


@pytest.mark.parametrize("level, which", [("L1B", "folder"), ("L1B", "METADATA.XML"),
                                          ("L1B", "SPECTRAL_IMAGE_VNIR.TIF"), ("L1C", "folder")])
def test_enmap_radiance_levels_are_refused_by_name(tmp_path, capsys, level, which):
    product = enmap.write_l1b(tmp_path) if level == "L1B" else enmap.write(tmp_path, level=level)
    path = product if which == "folder" else next(product.glob(f"*-{which}"))
    kind = {"L1B": "radiance, not orthorectified", "L1C": "radiance"}[level]
    code, err = run_cli(capsys, "train", path, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{path}: EnMAP {level} product ({kind}); cssd-geo reads EnMAP L2A (surface "
                                     "reflectance): order or process the L2A product")
    assert not (tmp_path / "m.cssd").exists()


def test_zipped_enmap_product_is_explained(tmp_path, capsys):
    archive = tmp_path / f"{enmap.PRODUCT.format(level='L2A')}.ZIP"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty ZIP archive
    code, err = run_cli(capsys, "train", archive, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{archive}: a zipped EnMAP product; unzip it and give the product folder (or "
                                     "its METADATA.XML)")


def test_incomplete_enmap_products_are_explained(tmp_path, capsys):
    product = enmap.write(tmp_path / "a")
    image = next(product.glob("*-SPECTRAL_IMAGE.TIF"))
    metadata = next(product.glob("*-METADATA.XML"))
    text = metadata.read_text()
    last = text.index('<bandID number="224"')
    metadata.write_text(text[:last] + '<bandID number="224" broken' + text[last + len('<bandID number="224"'):])
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and err.startswith(f"cssd-geo: error: {metadata}: not readable XML (") and \
        err.strip().endswith("; download the product again"), err
    metadata.write_text(text[:last] + text[text.index("</bandID>", last) + len("</bandID>"):])
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{metadata}: describes 223 bands but {image.name} has 224; the product is "
                                     "inconsistent: download it again")
    image.unlink()
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{product}: EnMAP L2A folder without its SPECTRAL_IMAGE.TIF; the product is "
                                     "incomplete: download it again (cssd-geo reads the GeoTIFF delivery format)")
    metadata.unlink()
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{product}: EnMAP product without its METADATA.XML; the product is "
                                     "incomplete: download it again")
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
    assert_one_line_error(code, err, f"{cloud}: the quality layer is not on the spectral image's grid; the product "
                                     "is inconsistent: download it again")


def test_enmap_trains_and_predicts_on_the_product_grid(enmap_product, tmp_path, capsys):
    model, landcover = tmp_path / "m.cssd", tmp_path / "map.tif"
    code, err = run_cli(capsys, "train", enmap_product, "--labels", EXAMPLE_FIELDS, "--shots", 5, "--epochs", 2,
                        "-o", model)
    assert code == 0, err
    meta = read_model_metadata(model)
    kept = np.asarray(meta["bands"]["kept"])
    assert not set(kept.tolist()) & set(enmap.DEAD_BANDS)  # the bands that are nodata everywhere
    assert len(kept) == 224 - len(enmap.DEAD_BANDS)
    np.testing.assert_allclose(meta["wavelengths"], enmap.WAVELENGTHS[kept - 1])
    assert meta["bands"]["scaled"] is True
    code, err = run_cli(capsys, "predict", model, enmap_product, "-o", landcover)
    assert code == 0, err
    with rasterio.open(landcover) as out, rasterio.open(next(enmap_product.glob("*-SPECTRAL_IMAGE.TIF"))) as src:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        classes = out.read(1)
    left_out = np.zeros(classes.shape, dtype=bool)
    for where in (enmap.GAP, enmap.CLOUD, enmap.CLOUD_SHADOW, enmap.HAZE, enmap.CIRRUS):
        left_out[where] = True
    assert (classes[left_out] == 0).all()  # nodata and flagged pixels: nodata (0) in the map
    assert (classes[~left_out] != 0).all()


# --- PRISMA L2D ----------------------------------------------------------------------------------

def expected_prisma_bands() -> tuple[np.ndarray, list[str]]:
    """Wavelengths and names of the bands the overlap rule keeps, in increasing wavelength."""
    wavelengths, names = [], []
    for detector, keep in (("Vnir", lambda w: (w > 0) & (w < 950)), ("Swir", lambda w: w >= 950)):
        cw = prisma.centres(detector).astype(np.float32).astype(float)
        slots = np.flatnonzero(keep(cw))
        slots = slots[np.argsort(cw[slots])]
        wavelengths.append(cw[slots])
        names += [f"{detector.upper()} {s + 1}" for s in slots]
    return np.concatenate(wavelengths), names


def test_prisma_l2d_joins_vnir_and_swir_in_wavelength_order(prisma_product):
    assert find_reader(str(prisma_product)) is prisma_reader.READER
    da = open_scene(prisma_product)
    wavelengths, names = expected_prisma_bands()
    assert da.attrs["product"] == "PRISMA L2D"
    assert dict(da.sizes) == {"band": len(wavelengths), "y": 97, "x": 97}
    assert isinstance(da.data, dsa.Array) and da.dtype == np.uint16
    assert da.rio.crs.to_epsg() == 32616 and da.rio.transform() == EXAMPLE_GRID_30M
    np.testing.assert_array_equal(da["band"].values, np.arange(1, len(wavelengths) + 1))
    np.testing.assert_array_equal(da["wavelength"].values, wavelengths)
    assert (np.diff(da["wavelength"].values) > 0).all() and (da["wavelength"].values > 0).all()
    assert list(da["band_name"].values) == names
    vnir = np.char.startswith(da["band_name"].values.astype(str), "VNIR")
    assert vnir.sum() == 60 and (~vnir).sum() == 170  # of 63 VNIR and 171 SWIR bands: 3 + 1 in the overlap left out
    assert da["wavelength"].values[vnir].max() < 950 <= da["wavelength"].values[~vnir].min()
    for detector, side in (("Vnir", vnir), ("Swir", ~vnir)):
        low, high = (float(np.float32(v)) for v in prisma.SCALE[detector])
        np.testing.assert_allclose(da["scale"].values[side], (high - low) / 65535, rtol=1e-12)
        np.testing.assert_allclose(da["offset"].values[side], low, rtol=1e-12)
    assert da.rio.nodata == 0
    bad = da["bad_band"].values
    assert bad.dtype == bool and list(da["band_name"].values[bad]) == [f"SWIR {prisma.INVALID_SWIR + 1}"]
    fwhm = prisma.widths("Swir").astype(np.float32)[prisma.INVALID_SWIR]
    assert da["fwhm"].values[bad][0] == pytest.approx(fwhm)


def test_prisma_values_round_trip_as_stored(prisma_product):
    da = open_scene(prisma_product)
    names = list(da["band_name"].values)
    with h5py.File(prisma_product) as f:
        cubes = {d: f[f"HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/{d}_Cube"][()] for d in ("VNIR", "SWIR")}
    for band in (0, 30, 59, 60, 120, len(names) - 1):  # 59: the last VNIR band, 60: the first SWIR
        detector, slot = names[band].split()
        for row, col in [(0, 0), (10, 50), (60, 90), (96, 96)]:
            assert int(da.data[band, row, col].compute()) == int(cubes[detector][row, int(slot) - 1, col])
    assert (da.data[:, prisma.FILL_ROWS, :].compute() == 0).all()  # fill: DN 0 in every band
    assert (da.data[:, 43:, :].compute() != 0).all()


def test_prisma_grid_comes_from_the_corner_pixel_centres(prisma_product):
    da = open_scene(prisma_product)
    with h5py.File(prisma_product) as f:
        west, north = f.attrs["Product_ULcorner_easting"], f.attrs["Product_ULcorner_northing"]
        east, south = f.attrs["Product_LRcorner_easting"], f.attrs["Product_LRcorner_northing"]
    assert (da["x"].values[0], da["y"].values[0]) == (west, north)
    assert (da["x"].values[-1], da["y"].values[-1]) == (east, south)


def test_renamed_prisma_file_is_still_recognised(prisma_product, tmp_path):
    renamed = tmp_path / "scene.he5"
    shutil.copy(prisma_product, renamed)
    assert find_reader(str(renamed)) is prisma_reader.READER
    assert open_scene(renamed).attrs["product"] == "PRISMA L2D"


@pytest.mark.parametrize("level, kind", [("L1", "radiance"), ("L2C", "surface reflectance, not geocoded")])
def test_prisma_other_levels_are_refused_by_name(tmp_path, capsys, level, kind):
    product = prisma.write_l1(tmp_path) if level == "L1" else prisma.write(tmp_path, level=level)
    code, err = run_cli(capsys, "train", product, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{product}: PRISMA {level} product ({kind}); cssd-geo reads PRISMA L2D "
                                     "(geocoded surface reflectance): order or process the L2D product")
    assert not (tmp_path / "m.cssd").exists()


def test_damaged_prisma_files_are_explained(prisma_product, tmp_path, capsys):
    damaged = tmp_path / prisma_product.name
    shutil.copy(prisma_product, damaged)
    with h5py.File(damaged, "a") as f:
        f.attrs["Product_LRcorner_easting"] = f.attrs["Product_LRcorner_easting"] + 300.0
    code, err = run_cli(capsys, "train", damaged, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{damaged}: the corner coordinates span 97.0 x 107.0 pixels of 30 m but the "
                                     "cubes hold 97 x 97; the product is inconsistent: download it again")
    with h5py.File(damaged, "a") as f:
        del f.attrs["Epsg_Code"], f.attrs["L2ScaleSwirMax"]
    code, err = run_cli(capsys, "train", damaged, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{damaged}: PRISMA L2D file without Epsg_Code, L2ScaleSwirMax; the product "
                                     "is incomplete: download it again")
    damaged.write_bytes(b"not hdf5")
    code, err = run_cli(capsys, "train", damaged, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and err.startswith(f"cssd-geo: error: {damaged}: not a readable HDF5 file (") and \
        err.strip().endswith("); download the product again") and len(err.strip().splitlines()) == 1, err


def test_prisma_file_without_a_level_is_explained(prisma_product, tmp_path, capsys):
    renamed = tmp_path / "scene.he5"
    shutil.copy(prisma_product, renamed)
    with h5py.File(renamed, "a") as f:
        del f.attrs["Processing_Level"]
    code, err = run_cli(capsys, "train", renamed, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, f"{renamed}: PRISMA file with no Processing_Level attribute and no level in its "
                                     "name; cssd-geo reads PRISMA L2D files as delivered (PRS_L2D_...he5): give the "
                                     "product's original file")


@pytest.mark.parametrize("epsg, message", [
    (4326, "Epsg_Code 4326 is not a projected CRS; PRISMA L2D comes on a UTM grid: order the L2D product in its "
           "standard (UTM) projection"),
    (99999, "Epsg_Code 99999 is not a known EPSG code (")])
def test_prisma_epsg_code_is_checked(prisma_product, tmp_path, capsys, epsg, message):
    damaged = tmp_path / prisma_product.name
    shutil.copy(prisma_product, damaged)
    with h5py.File(damaged, "a") as f:
        f.attrs["Epsg_Code"] = np.int32(epsg)
    code, err = run_cli(capsys, "train", damaged, "--labels", EXAMPLE_FIELDS, "-o", tmp_path / "m.cssd")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"cssd-geo: error: {damaged}: {message}"), err
    assert err.strip().endswith("projection" if epsg == 4326 else "the product is damaged: download it again"), err


def test_prisma_trains_and_predicts_on_the_product_grid(prisma_product, tmp_path, capsys):
    model, landcover = tmp_path / "m.cssd", tmp_path / "map.tif"
    code, err = run_cli(capsys, "train", prisma_product, "--labels", EXAMPLE_FIELDS, "--shots", 5, "--epochs", 2,
                        "-o", model)
    assert code == 0, err
    da = open_scene(prisma_product)
    meta = read_model_metadata(model)
    kept = np.asarray(meta["bands"]["kept"])
    bad = np.flatnonzero(da["bad_band"].values) + 1
    assert not set(kept.tolist()) & set(bad.tolist()) and len(kept) == da.sizes["band"] - len(bad)
    np.testing.assert_allclose(meta["wavelengths"], da["wavelength"].values[kept - 1])
    assert meta["bands"]["scaled"] is True
    code, err = run_cli(capsys, "predict", model, prisma_product, "-o", landcover)
    assert code == 0, err
    with rasterio.open(landcover) as out:
        assert out.crs.to_epsg() == 32616 and out.transform == EXAMPLE_GRID_30M and out.shape == (97, 97)
        classes = out.read(1)
    assert (classes[prisma.FILL_ROWS] == 0).all()
    rows = np.ones(97, dtype=bool)
    rows[prisma.FILL_ROWS] = False
    assert (classes[rows] != 0).all()
