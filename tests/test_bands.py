"""Band hygiene, scale/offset and masks: the scene as the model sees it (cssd_geo.bands, cssd_geo.masks)."""
from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from cssd_geo import cli
from cssd_geo.bands import MIN_VALID_SHARE, choose_bands, parse_band_list
from cssd_geo.errors import CssdError
from cssd_geo.io.scene import open_scene
from cssd_geo.model.modelfile import read_model_metadata
from tests.conftest import CRS, ORIGIN, PIXEL, make_cube, write_scene, write_stripe_labels
from tests.product_fixtures import EXAMPLE_FIELDS, example_cube

ENMAP_DEAD = range(130, 136)  # 1-based: the water-vapour bands an EnMAP L2A scene delivers as nodata
NODATA = -32768
# EnMAP's band centres, roughly: 91 VNIR bands 418-993 nm, then 133 SWIR bands 902-2445 nm
ENMAP_WAVELENGTHS = np.concatenate([np.linspace(418.0, 993.0, 91), np.linspace(902.0, 2445.0, 133)])


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = cli.main(["--quiet", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _train_args(scene: str, labels: str, model: str, *extra: object) -> list[object]:
    return ["train", scene, "--labels", labels, "-o", model, "--shots", 4, "--epochs", 1, "--patch", 3, *extra]


# --- --bands / --exclude-bands ----------------------------------------------------------------

WL = [450.0 + 10 * i for i in range(12)]


@pytest.mark.parametrize(("text", "expected"), [
    ("1-3,5", [1, 2, 3, 5]),
    ("12", [12]),
    ("470-490", [3, 4, 5]),  # above the band count: nm
    ("4-6nm", []),  # says nm: no band between 4 and 6 nm
    ("455.5-475", [2, 3]),  # a decimal point: nm
    ("500nm", [6]),  # one wavelength: the nearest band
    (" 1 , 2 ", [1, 2]),
])
def test_band_lists_take_indices_and_wavelength_ranges(text, expected):
    chosen = parse_band_list(text, "--bands", 12, WL)
    assert (np.flatnonzero(chosen) + 1).tolist() == expected


@pytest.mark.parametrize(("text", "message"), [
    ("1-x", "--bands 1-x: cannot read '1-x'; give band numbers and ranges (1-50,60) or wavelength ranges in nm "
            "(1340-1460,1790-1960)"),
    ("5-2", "--bands 5-2: range '5-2' runs backwards; write it low-high"),
    ("0-3", "--bands 0-3: band numbers start at 1"),
])
def test_band_list_errors_say_how_to_write_one(text, message):
    with pytest.raises(CssdError) as caught:
        parse_band_list(text, "--bands", 12, WL)
    assert str(caught.value) == message


def test_wavelength_range_without_wavelengths_is_refused():
    with pytest.raises(CssdError, match=r"is a wavelength range but the scene has no band wavelengths; give band "
                                        r"numbers 1-12 instead"):
        parse_band_list("1340-1460", "--exclude-bands", 12, None)


def test_exclude_bands_reach_the_model_and_prediction(tmp_path, small_scene, capsys):
    scene, labels, _ = small_scene
    model = str(tmp_path / "m.cssd")
    code, _, err = run_cli(capsys, *_train_args(scene, labels, model, "--exclude-bands", "2-3,500-510"))
    assert code == 0, err
    record = read_model_metadata(model)["bands"]
    assert record["kept"] == [1, 4, 5, 8, 9, 10, 11, 12]
    assert {d["band"]: d["reason"] for d in record["dropped"]} == {2: "in --exclude-bands", 3: "in --exclude-bands",
                                                                    6: "in --exclude-bands", 7: "in --exclude-bands"}
    assert read_model_metadata(model)["wavelengths"] == [450.0, 480.0, 490.0, 520.0, 530.0, 540.0, 550.0, 560.0]
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", tmp_path / "map.tif")
    assert code == 0, err


# --- dead bands and gaps: an EnMAP-like scene as delivered ---------------------------------------

@pytest.fixture(scope="module")
def enmap_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """224 bands (EnMAP's VNIR + SWIR range) over the example scene, int16 reflectance x 10000,
    nodata -32768 in six whole bands and in gaps between valid areas."""
    example = example_cube()
    wavelengths = ENMAP_WAVELENGTHS
    cube = np.round(example.at_wavelengths(wavelengths) * 10000).astype(np.int16)
    gaps = np.zeros(cube.shape[1:], dtype=bool)
    gaps[60:66, :] = True  # a stripe between two valid areas
    gaps[:, 100:104] = True
    gaps[:10, :10] = True
    cube[:, gaps] = NODATA
    cube[np.asarray(ENMAP_DEAD) - 1] = NODATA
    path = tmp_path_factory.mktemp("enmap_like") / "ENMAP_L2A_SPECTRAL_IMAGE.tif"
    with rasterio.open(path, "w", driver="GTiff", width=cube.shape[2], height=cube.shape[1], count=224,
                       dtype="int16", crs=example.crs, transform=example.transform, nodata=NODATA,
                       compress="deflate") as ds:
        ds.write(cube)
        for i, w in enumerate(wavelengths):
            ds.update_tags(i + 1, wavelength=f"{w:.3f}", wavelength_units="Nanometers")
    return str(path), gaps


def test_enmap_like_scene_trains_predicts_and_evaluates_as_delivered(enmap_like, tmp_path, capsys):
    scene, gaps = enmap_like
    model, landcover = str(tmp_path / "m.cssd"), str(tmp_path / "landcover.tif")
    code, _, err = run_cli(capsys, "train", scene, "--labels", EXAMPLE_FIELDS, "-o", model, "--shots", 5,
                           "--epochs", 2)
    assert code == 0, err
    dead = ", ".join(f"{b} ({ENMAP_WAVELENGTHS[b - 1]:.1f} nm)" for b in ENMAP_DEAD)
    assert f"bands: 218 of 224 kept; dropped 6 no valid value ({dead})" in err
    assert 1340 < ENMAP_WAVELENGTHS[129] < ENMAP_WAVELENGTHS[134] < 1420  # the 1.4 um water-vapour region
    record = read_model_metadata(model)["bands"]
    assert [d["band"] for d in record["dropped"]] == list(ENMAP_DEAD)
    assert len(read_model_metadata(model)["wavelengths"]) == 218
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", landcover)
    assert code == 0, err
    with rasterio.open(landcover) as ds:
        classes = ds.read(1)
        assert ds.count == 1 and ds.shape == gaps.shape
        assert (classes[gaps] == ds.nodata).all()  # gaps stay nodata
        assert (classes[~gaps] != ds.nodata).all()
    code, out, err = run_cli(capsys, "evaluate", landcover, "--labels", EXAMPLE_FIELDS, "--exclude-training", model)
    assert code == 0, err
    assert "overall accuracy" in out.lower()


def test_all_nodata_error_names_the_bands_that_have_no_common_pixel(tmp_path, capsys):
    cube = make_cube(20, 24, 6)
    cube[0, :, :12] = NODATA  # band 1 has data only on the right, band 2 only on the left
    cube[1, :, 12:] = NODATA
    scene = write_scene(tmp_path / "s.tif", cube, nodata=NODATA)
    labels = write_stripe_labels(tmp_path / "l.gpkg", 20, 24)
    code, _, err = run_cli(capsys, *_train_args(scene, labels, tmp_path / "m.cssd"))
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {scene}: no pixel is valid in every kept band; the bands with the "
                           "fewest valid pixels are 1 'B1' (450.0 nm) 50%, 2 'B2' (460.0 nm) 50%: leave them out with "
                           "--exclude-bands")


def test_all_nodata_error_points_at_the_nodata_value(tmp_path, capsys):
    cube = np.full((6, 20, 24), 7, dtype=np.int16)
    scene = write_scene(tmp_path / "s.tif", cube, nodata=7)
    labels = write_stripe_labels(tmp_path / "l.gpkg", 20, 24)
    code, _, err = run_cli(capsys, *_train_args(scene, labels, tmp_path / "m.cssd"))
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {scene}: every value of the kept bands is the nodata value 7 or not "
                           "finite; check the scene's nodata value (e.g. gdal_edit.py -a_nodata) and --bands")


def test_a_band_valid_almost_nowhere_is_dropped(tmp_path):
    cube = make_cube(40, 40, 6)
    cube[3] = NODATA
    cube[3, 0, 0] = 100  # 1 of 1600 pixels: below MIN_VALID_SHARE
    assert 1 / 1600 < MIN_VALID_SHARE
    scene = open_scene(write_scene(tmp_path / "s.tif", cube, nodata=NODATA))
    record = choose_bands(scene, None, None, None, "s.tif")
    assert record.kept == [1, 2, 3, 5, 6]
    assert record.dropped[0].reason == "valid in fewer than 1% of the pixels"


def test_envi_bad_band_list_is_honoured(tmp_path):
    cube = make_cube(20, 24, 5)
    with rasterio.open(tmp_path / "s.bsq", "w", driver="ENVI", width=24, height=20, count=5, dtype="int16",
                       crs=CRS, transform=from_origin(*ORIGIN, PIXEL, PIXEL)) as ds:
        ds.write(cube)
    with open(tmp_path / "s.hdr", "a") as header:
        header.write("bbl = {1, 1, 0, 1, 1}\n")
    scene = open_scene(tmp_path / "s.bsq")
    record = choose_bands(scene, None, None, None, "s.bsq")
    assert record.kept == [1, 2, 4, 5]
    assert record.dropped[0].reason == "flagged bad by the file"


# --- scale and offset ------------------------------------------------------------------------------

def _scaled_scene(path: str, cube: np.ndarray, scale: float | None, offset: float = 0.0) -> str:
    write_scene(path, cube)
    if scale is not None:
        with rasterio.open(path, "r+") as ds:
            ds.scales = [scale] * ds.count
            ds.offsets = [offset] * ds.count
    return path


def test_scale_and_offset_are_applied_recorded_and_checked(tmp_path, capsys):
    cube = make_cube(36, 42, 12)
    scene = _scaled_scene(str(tmp_path / "scaled.tif"), cube, 0.0001, 0.01)
    labels = write_stripe_labels(tmp_path / "l.gpkg", 36, 42)
    model = str(tmp_path / "m.cssd")
    code, _, err = run_cli(capsys, *_train_args(scene, labels, model))
    assert code == 0, err
    meta = read_model_metadata(model)
    assert meta["bands"]["scaled"] is True
    assert meta["bands"]["scale"] == [0.0001] * 12 and meta["bands"]["offset"] == [0.01] * 12
    from safetensors.torch import load_file

    mean = load_file(model)["band_mean"].numpy()
    assert mean == pytest.approx(cube.reshape(12, -1).mean(axis=1) * 0.0001 + 0.01, rel=1e-3)  # what the model saw
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", tmp_path / "a.tif")
    assert code == 0, err
    plain = _scaled_scene(str(tmp_path / "plain.tif"), cube, None)
    code, _, err = run_cli(capsys, "predict", model, plain, "-o", tmp_path / "b.tif")
    assert code == 2
    assert f"{plain}: stores its values without a scale, but model {model} was trained on values scaled" in err
    assert not os.path.exists(tmp_path / "b.tif")


# --- the model's bands in another scene ----------------------------------------------------------

def test_scene_lacking_the_models_bands_is_named(tmp_path, small_scene, capsys):
    scene, labels, cube = small_scene
    model = str(tmp_path / "m.cssd")
    code, _, err = run_cli(capsys, *_train_args(scene, labels, model))
    assert code == 0, err
    fewer = write_scene(tmp_path / "fewer.tif", cube[:9])  # the last three bands (540-560 nm) missing
    code, _, err = run_cli(capsys, "predict", model, fewer, "-o", tmp_path / "map.tif")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {fewer}: lacks 3 of the 12 bands model {model} uses: "
                           "10 'B10' (540.0 nm), 11 'B11' (550.0 nm), 12 'B12' (560.0 nm); "
                           "predict on a scene from the same sensor with these bands")


def test_bands_are_found_by_wavelength_in_a_scene_with_more_bands(tmp_path, small_scene, capsys):
    scene, labels, cube = small_scene
    model = str(tmp_path / "m.cssd")
    assert run_cli(capsys, *_train_args(scene, labels, model, "--bands", "1-6"))[0] == 0
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", tmp_path / "map.tif")
    assert code == 0, err


# --- masks -----------------------------------------------------------------------------------------

def test_raster_and_vector_masks_leave_pixels_out_of_training_and_the_map(tmp_path, small_scene, capsys):
    scene, labels, _ = small_scene
    mask = np.zeros((36, 42), dtype=np.uint8)
    mask[:, :6] = 1  # the left of the first stripe: left out
    mask_path = tmp_path / "mask.tif"
    with rasterio.open(mask_path, "w", driver="GTiff", width=42, height=36, count=1, dtype="uint8", crs=CRS,
                       transform=from_origin(*ORIGIN, PIXEL, PIXEL)) as ds:
        ds.write(mask, 1)
    model = str(tmp_path / "m.cssd")
    code, _, err = run_cli(capsys, *_train_args(scene, labels, model, "--mask", mask_path))
    assert code == 0, err
    assert min(read_model_metadata(model)["training_pixels"]["cols"]) >= 6
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", tmp_path / "raster.tif", "--mask", mask_path)
    assert code == 0, err
    with rasterio.open(tmp_path / "raster.tif") as ds:
        classes = ds.read(1)
        assert (classes[:, :6] == ds.nodata).all() and (classes[:, 6:] != ds.nodata).all()
    keep = gpd.GeoDataFrame(geometry=[box(ORIGIN[0] + 10 * PIXEL, ORIGIN[1] - 36 * PIXEL, ORIGIN[0] + 42 * PIXEL,
                                          ORIGIN[1])], crs=CRS).to_crs("EPSG:4326")  # another CRS
    keep.to_file(tmp_path / "keep.gpkg")
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", tmp_path / "vector.tif", "--mask",
                           tmp_path / "keep.gpkg")
    assert code == 0, err
    with rasterio.open(tmp_path / "vector.tif") as ds:
        classes = ds.read(1)
        assert (classes[:, :10] == ds.nodata).all() and (classes[:, 11:] != ds.nodata).all()


def test_mask_on_another_grid_is_resampled(tmp_path, small_scene, capsys):
    scene, labels, _ = small_scene
    model = str(tmp_path / "m.cssd")
    assert run_cli(capsys, *_train_args(scene, labels, model))[0] == 0
    coarse = np.zeros((12, 14), dtype=np.uint8)
    coarse[:, :2] = 1  # 90 m pixels: the first two cover scene columns 0-5
    with rasterio.open(tmp_path / "coarse.tif", "w", driver="GTiff", width=14, height=12, count=1, dtype="uint8",
                       crs=CRS, transform=from_origin(*ORIGIN, 3 * PIXEL, 3 * PIXEL)) as ds:
        ds.write(coarse, 1)
    code, _, err = run_cli(capsys, "predict", model, scene, "-o", tmp_path / "m.tif", "--mask", tmp_path / "coarse.tif")
    assert code == 0, err
    with rasterio.open(tmp_path / "m.tif") as ds:
        classes = ds.read(1)
        assert (classes[:, :6] == ds.nodata).all() and (classes[:, 6:] != ds.nodata).all()


def test_missing_mask_file_is_refused(tmp_path, small_scene, capsys):
    scene, labels, _ = small_scene
    code, _, err = run_cli(capsys, *_train_args(scene, labels, tmp_path / "m.cssd", "--mask", tmp_path / "no.tif"))
    assert code == 2
    assert err.strip() == f"cssd-geo: error: {tmp_path / 'no.tif'}: mask file not found; check the --mask path"


def test_a_model_without_a_band_record_needs_every_band_in_order(tmp_path, small_scene, capsys):
    """Model files from before band records: the scene must have the model's bands, all and in order."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    scene, labels, cube = small_scene
    model = str(tmp_path / "m.cssd")
    assert run_cli(capsys, *_train_args(scene, labels, model))[0] == 0
    with safe_open(model, framework="pt") as f:
        header = json.loads(f.metadata()["cssd_geo"])
    del header["bands"]
    save_file(load_file(model), model, metadata={"cssd_geo": json.dumps(header)})
    assert run_cli(capsys, "predict", model, scene, "-o", tmp_path / "same.tif")[0] == 0
    fewer = write_scene(tmp_path / "fewer.tif", cube[:10])
    code, _, err = run_cli(capsys, "predict", model, fewer, "-o", tmp_path / "m.tif")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {fewer}: has 10 bands but model {model} was trained on 12; predict on "
                           "a scene from the same sensor and band subset")


def test_scene_with_a_scale_for_a_model_trained_on_stored_values_is_refused(tmp_path, small_scene, capsys):
    scene, labels, cube = small_scene
    model = str(tmp_path / "m.cssd")
    assert run_cli(capsys, *_train_args(scene, labels, model))[0] == 0
    scaled = _scaled_scene(str(tmp_path / "scaled.tif"), cube, 0.0001)
    code, _, err = run_cli(capsys, "predict", model, scaled, "-o", tmp_path / "map.tif")
    assert code == 2
    assert err.strip() == (f"cssd-geo: error: {scaled}: stores a scale/offset (scale 0.0001, offset 0) but model "
                           f"{model} was trained on values as stored; predict on a scene stored like the training "
                           "scene")


@pytest.mark.parametrize(("options", "message"), [
    (["--bands", "1-2"], "only 2 band(s) left after --bands/--exclude-bands and dropping bad bands; CSSD needs at "
                         "least 3: keep more bands"),
    (["--exclude-bands", "1-12"], "no band is left after --bands/--exclude-bands and the file's bad-band flags; "
                                  "keep at least three bands"),
])
def test_too_few_bands_left_is_refused(tmp_path, small_scene, capsys, options, message):
    scene, labels, _ = small_scene
    code, _, err = run_cli(capsys, *_train_args(scene, labels, tmp_path / "m.cssd", *options))
    assert code == 2
    assert err.strip().splitlines()[-1] == f"cssd-geo: error: {scene}: {message}"
    assert not os.path.exists(tmp_path / "m.cssd")


def _mask_raster(path: str, values: np.ndarray, crs: str | None = CRS) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=from_origin(*ORIGIN, 3 * PIXEL, 3 * PIXEL)) as ds:
        ds.write(values, 1)
    return path


def test_mask_problems_are_explained(tmp_path, small_scene, capsys):
    scene, labels, _ = small_scene
    cases = []
    everything = _mask_raster(str(tmp_path / "all.tif"), np.ones((12, 14), dtype=np.uint8))
    cases.append((everything, f"{scene}: the masks leave out every pixel; check --mask and the product's quality "
                              "layers"))
    no_crs = _mask_raster(str(tmp_path / "nocrs.tif"), np.zeros((12, 14), dtype=np.uint8), crs=None)
    cases.append((no_crs, f"{no_crs}: the mask raster has no CRS and is not on the scene's grid; give it the scene's "
                          "CRS or grid"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a mask")
    cases.append((str(notes), f"{notes}: not a raster or vector layer GDAL can read ("))
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=CRS).iloc[:0].to_file(empty)
    cases.append((str(empty), f"{empty}: the mask layer has no areas; give polygons of the areas to keep"))
    for mask, message in cases:
        code, _, err = run_cli(capsys, *_train_args(scene, labels, tmp_path / "m.cssd", "--mask", mask))
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"cssd-geo: error: {message}"), err
        assert not os.path.exists(tmp_path / "m.cssd")
