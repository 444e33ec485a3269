"""Every bad input of docs/errors.md through the CLI: exit status 2, one line that names the
file, the problem and the fix, no traceback, and nothing left at the output path. Inputs
that are messy but usable (NaN pixels, labels in another CRS, partly outside, invalid
geometries) must work and say what was done."""
from __future__ import annotations

import errno
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

import cssd_geo
from cssd_geo import CssdError, cli
from tests.conftest import CRS, ORIGIN, PIXEL, make_cube, write_scene, write_stripe_labels

FAST = ["--epochs", "1", "--shots", "2", "--patch", "5", "--seed", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A scene, its labels and a model trained on them, shared by the cases."""
    root = tmp_path_factory.mktemp("errors")
    cube = make_cube(36, 42, 12)
    scene = write_scene(root / "scene.tif", cube)
    labels = write_stripe_labels(root / "labels.gpkg", 36, 42)
    model = root / "model.cssd"
    assert cli.main(["--quiet", "train", scene, "--labels", labels, "-o", str(model), *FAST]) == 0
    return {"root": root, "cube": cube, "scene": scene, "labels": labels, "model": str(model)}


@pytest.fixture(scope="module")
def class_map(workspace):
    """The workspace scene's class map, for the evaluate cases."""
    path = workspace["root"] / "map.tif"
    assert cli.main(["--quiet", "predict", workspace["model"], workspace["scene"], "-o", str(path)]) == 0
    return str(path)


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--quiet", *map(str, argv)])
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("cssd-geo: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"


def raster(path, cube, crs=CRS, nodata=None, dtype="int16"):
    with rasterio.open(path, "w", driver="GTiff", width=cube.shape[2], height=cube.shape[1], count=cube.shape[0],
                       dtype=dtype, crs=crs, transform=from_origin(*ORIGIN, PIXEL, PIXEL), nodata=nodata) as ds:
        ds.write(cube.astype(dtype))
    return str(path)


def frame(geoms, ids, crs=CRS, **columns):
    import geopandas as gpd

    return gpd.GeoDataFrame({"class_id": ids, **columns}, geometry=geoms, crs=crs)


def stripe(k: int, inset: float = 1.0):
    from shapely.geometry import box

    x0, y0 = ORIGIN
    c0, c1 = (0, 14) if k == 1 else (14, 28) if k == 2 else (28, 42)
    return box(x0 + (c0 + inset) * PIXEL, y0 - (36 - inset) * PIXEL, x0 + (c1 - inset) * PIXEL, y0 - inset * PIXEL)


# --- scene -----------------------------------------------------------------------------------

def test_scene_missing(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "train", tmp_path / "nope.tif", "--labels", workspace["labels"],
                        "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, "nope.tif", "not found", "check the path")


def test_scene_not_a_raster(workspace, capsys, tmp_path):
    (tmp_path / "notes.tif").write_text("field notes, not pixels")
    code, err = run_cli(capsys, "predict", workspace["model"], tmp_path / "notes.tif", "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "notes.tif", "not a raster GDAL can read", "give a GeoTIFF")


def test_scene_truncated_header(workspace, capsys, tmp_path):
    data = open(workspace["scene"], "rb").read()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    code, err = run_cli(capsys, "predict", workspace["model"], tmp_path / "cut.tif", "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "cut.tif", "not a raster GDAL can read")


def test_scene_truncated_pixels(workspace, capsys, tmp_path):
    # header first (COG layout), pixel blocks cut off: the file opens, reading fails midway
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(workspace["scene"], cog, driver="COG", BLOCKSIZE=16, COMPRESS="DEFLATE")
    data = cog.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "m.tif"
    code, err = run_cli(capsys, "predict", workspace["model"], tmp_path / "cut.tif", "-o", out, "--chunk", "16")
    assert_one_line_error(code, err, "cut.tif", "cannot read the raster", "truncated or corrupt")
    assert os.listdir(tmp_path) == ["cog.tif", "cut.tif"]  # no map, no partial file


def test_scene_without_crs(workspace, capsys, tmp_path):
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=42, height=36, count=12, dtype="int16",
                       transform=from_origin(*ORIGIN, PIXEL, PIXEL)) as ds:
        ds.write(workspace["cube"])
    code, err = run_cli(capsys, "train", tmp_path / "nocrs.tif", "--labels", workspace["labels"],
                        "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "nocrs.tif", "no CRS", "gdal_edit.py -a_srs")


def test_scene_with_a_single_band(workspace, capsys, tmp_path):
    path = raster(tmp_path / "one.tif", workspace["cube"][:1])
    code, err = run_cli(capsys, "train", path, "--labels", workspace["labels"], "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "one.tif", "has 1 band(s)", "at least 3 bands")
    assert not (tmp_path / "m.cssd").exists()


def test_scene_folder_not_a_raster(workspace, capsys, tmp_path):
    (tmp_path / "tiles").mkdir()
    code, err = run_cli(capsys, "predict", workspace["model"], tmp_path / "tiles", "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "tiles: is a folder, not a raster", "give a GeoTIFF/ENVI file or a .zarr store")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_scene_with_subdatasets(workspace, capsys, tmp_path):
    import xarray as xr

    with rasterio.Env() as env:
        if "netCDF" not in env.drivers():
            pytest.skip("this GDAL has no netCDF driver")
    grid = {"y": np.arange(4.0), "x": np.arange(5.0)}
    xr.Dataset({"a": (("y", "x"), np.zeros((4, 5), "f4")), "b": (("y", "x"), np.ones((4, 5), "f4"))},
               coords=grid).to_netcdf(tmp_path / "two.nc", engine="scipy")
    code, err = run_cli(capsys, "predict", workspace["model"], tmp_path / "two.nc", "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "two.nc: holds several subdatasets", "open one of them (e.g. NETCDF:file:var)")


def _zarr_store(path, case: str) -> None:
    import xarray as xr

    grid = {"y": np.arange(4.0), "x": np.arange(5.0)}
    cube = (("band", "y", "x"), np.zeros((3, 4, 5), "f4"))
    if case == "unreadable":
        os.mkdir(path)  # a folder named .zarr with nothing in it
        return
    variables = {"none": {"a": (("y", "x"), np.zeros((4, 5), "f4"))},
                 "two": {"a": cube, "b": cube},
                 "dims": {"a": (("band", "row", "col"), np.zeros((3, 4, 5), "f4"))},
                 "empty": {"a": (("band", "y", "x"), np.zeros((0, 4, 5), "f4"))}}[case]
    xr.Dataset(variables, coords=grid if case != "dims" else None).to_zarr(path, mode="w")


@pytest.mark.parametrize("case, needles", [
    ("unreadable", ["not a readable Zarr store", "give a store written by cssd-geo or xarray"]),
    ("none", ["must hold exactly one 3-D variable, found none", "the store's only 3-D variable"]),
    ("two", ["must hold exactly one 3-D variable, found ['a', 'b']", "the store's only 3-D variable"]),
    ("dims", ["variable 'a' has dims ('band', 'row', 'col'); expected (band, y, x)"]),
    ("empty", ["the scene is empty ({'band': 0, 'y': 4, 'x': 5})", "use a raster with pixels and bands"]),
])
@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_scene_zarr_store_problems(workspace, capsys, tmp_path, case, needles):
    store = tmp_path / "scene.zarr"
    _zarr_store(store, case)
    code, err = run_cli(capsys, "predict", workspace["model"], store, "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "scene.zarr: ", *needles)
    assert not (tmp_path / "m.tif").exists()


def test_scene_nan_and_inf_pixels_are_nodata(workspace, capsys, tmp_path):
    cube = workspace["cube"].astype("float32")
    cube[3, 5, 7] = np.nan
    cube[0, 20, 30] = np.inf
    path = raster(tmp_path / "holes.tif", cube, dtype="float32")
    model, out = tmp_path / "m.cssd", tmp_path / "map.tif"
    assert run_cli(capsys, "train", path, "--labels", workspace["labels"], "-o", model, *FAST)[0] == 0
    assert run_cli(capsys, "predict", model, path, "-o", out, "--chunk", "16")[0] == 0
    with rasterio.open(out) as ds:
        ids = ds.read(1)
    assert ids[5, 7] == ids[20, 30] == 0  # nodata
    assert (ids > 0).sum() == ids.size - 2


def test_scene_all_nodata(workspace, capsys, tmp_path):
    path = raster(tmp_path / "empty.tif", np.full_like(workspace["cube"], -9999), nodata=-9999)
    code, err = run_cli(capsys, "train", path, "--labels", workspace["labels"], "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "empty.tif: every value of the kept bands is the nodata value -9999 or not "
                          "finite; check the scene's nodata value (e.g. gdal_edit.py -a_nodata) and --bands")
    out = tmp_path / "map.tif"
    code, err = run_cli(capsys, "predict", workspace["model"], path, "-o", out)
    assert_one_line_error(code, err, "empty.tif", "every pixel is nodata", "nodata value")
    assert sorted(os.listdir(tmp_path)) == ["empty.tif"]


def test_a_chunk_of_nodata_still_maps_the_rest(workspace, capsys, tmp_path):
    cube = workspace["cube"].copy()
    cube[:, :16, :16] = -9999  # exactly one 16 x 16 chunk
    path = raster(tmp_path / "hole.tif", cube, nodata=-9999)
    out = tmp_path / "map.tif"
    assert run_cli(capsys, "predict", workspace["model"], path, "-o", out, "--chunk", "16")[0] == 0
    with rasterio.open(out) as ds:
        ids = ds.read(1)
    assert (ids[:16, :16] == 0).all()
    ids[:16, :16] = 1
    assert (ids > 0).all()


# --- labels ----------------------------------------------------------------------------------

def test_labels_missing(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "fields.shp", "-o",
                        tmp_path / "m.cssd")
    assert_one_line_error(code, err, "fields.shp", "labels file not found")


def test_labels_not_a_vector(workspace, capsys, tmp_path):
    (tmp_path / "fields.shp").write_text("not a shapefile")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "fields.shp", "-o",
                        tmp_path / "m.cssd")
    assert_one_line_error(code, err, "fields.shp", "not a vector layer", "shapefile, GeoPackage or GeoJSON")


def test_labels_without_crs(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2)], [1, 2], crs=None).to_file(tmp_path / "l.shp")  # no .prj
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "l.shp", "-o",
                        tmp_path / "m.cssd")
    assert_one_line_error(code, err, "l.shp", "no CRS", "ogr2ogr -a_srs")


def test_labels_in_another_crs_are_reprojected(workspace, capsys, tmp_path):
    path = write_stripe_labels(tmp_path / "wgs84.gpkg", 36, 42, crs="EPSG:4326")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", path, "-o", tmp_path / "m.cssd", *FAST)
    assert code == 0, err


def test_labels_entirely_outside(workspace, capsys, tmp_path):
    from shapely.affinity import translate

    frame([translate(stripe(1), 1e5), translate(stripe(2), 1e5)], [1, 2]).to_file(tmp_path / "far.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "far.gpkg", "-o",
                        tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "far.gpkg", "no label falls inside the scene", "overlap the scene")


def test_labels_partly_outside_use_the_inside(workspace, capsys, tmp_path):
    from shapely.affinity import translate

    geoms = [stripe(1), stripe(2), stripe(3), translate(stripe(3), 1e5)]
    frame(geoms, [1, 2, 3, 3]).to_file(tmp_path / "some.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "some.gpkg", "-o",
                        tmp_path / "m.cssd", "--shots", "2", "--epochs", "1", "--patch", "5", "--device", "cpu")
    assert code == 0, err
    assert "1 of 4 features lie outside the scene and were left out" in err


def test_labels_empty_layer(workspace, capsys, tmp_path):
    frame([stripe(1)], [1]).iloc[:0].to_file(tmp_path / "empty.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "empty.gpkg", "-o",
                        tmp_path / "m.cssd")
    assert_one_line_error(code, err, "empty.gpkg", "no features with a geometry", "add labelled polygons")


def test_labels_invalid_and_empty_geometries_are_repaired_or_skipped(workspace, capsys, tmp_path):
    from shapely.geometry import Polygon

    x0, y0 = ORIGIN
    bowtie = Polygon([(x0 + 30, y0 - 30), (x0 + 360, y0 - 1050), (x0 + 360, y0 - 30), (x0 + 30, y0 - 1050)])
    frame([bowtie, stripe(2), stripe(3), Polygon()], [1, 2, 3, 3]).to_file(tmp_path / "messy.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "messy.gpkg", "-o",
                        tmp_path / "m.cssd", *FAST)
    assert code == 0, err
    assert "1 invalid geometries (e.g. self-intersecting) were repaired" in err
    assert "1 features have an empty or no geometry and were skipped" in err


def test_labels_class_field_missing_lists_the_fields(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", workspace["labels"], "--class-field",
                        "landuse", "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, "labels.gpkg", "no field 'landuse'", "class_id (int", "class_name")


def test_labels_class_field_with_mixed_types(workspace, capsys, tmp_path):
    import geopandas as gpd

    mixed = gpd.GeoDataFrame({"cls": [1, "forest", 3]}, geometry=[stripe(1), stripe(2), stripe(3)], crs=CRS)
    path = tmp_path / "mixed.geojson"
    path.write_text(mixed.to_json())
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", path, "--class-field", "cls",
                        "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, "mixed.geojson", "field 'cls' mixes numbers and text", "'1' and 'forest'",
                          "all integers or all text")


def test_labels_class_field_not_guessable(capsys, tmp_path):
    root = os.path.join(os.path.dirname(__file__), "..", "examples", "berlin")
    code, err = run_cli(capsys, "train", os.path.join(root, "berlin.tif"), "--labels",
                        os.path.join(root, "landcover.shp"), "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, "landcover.shp", "several fields could be the class field",
                          "(Level_1/Level_1_ID, Level_2/Level_2_ID)", "choose one with --class-field")


def test_labels_without_class_value_are_left_out(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2), stripe(3), stripe(3, 3)], [1, 2, 3, None]).to_file(tmp_path / "gaps.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "gaps.gpkg", "--class-field",
                        "class_id", "-o", tmp_path / "m.cssd", *FAST)
    assert code == 0, err
    assert "gaps.gpkg: 1 features have no value in 'class_id' and were left out" in err


def test_labels_coordinates_outside_their_crs(workspace, capsys, tmp_path):
    # UTM coordinates in a GeoJSON, which declares WGS84 degrees by definition
    path = tmp_path / "utm.geojson"
    path.write_text(frame([stripe(1), stripe(2)], [1, 2]).to_json(drop_id=True).replace('"crs"', '"_crs"'))
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", path, "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "utm.geojson", "no valid coordinates in the scene CRS", "layer's CRS")


def test_labels_class_with_fewer_pixels_than_shots(workspace, capsys, tmp_path):
    from shapely.geometry import box

    x0, y0 = ORIGIN
    tiny = box(x0 + 30 * PIXEL + 1, y0 - 3 * PIXEL + 1, x0 + 33 * PIXEL - 1, y0 - PIXEL - 1)  # 3 x 2 px
    frame([stripe(1), stripe(2), tiny], [1, 2, 3]).to_file(tmp_path / "few.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "few.gpkg", "-o",
                        tmp_path / "m.cssd", "--shots", "10", "--epochs", "1", "--patch", "5", "--device", "cpu")
    assert code == 0, err
    assert "has 6 labelled pixels, fewer than --shots 10: using 6" in err


def test_labels_single_class(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2)], [1, 1]).to_file(tmp_path / "one.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "one.gpkg", "--class-field",
                        "class_id", "-o", tmp_path / "m.cssd")
    assert_one_line_error(code, err, "one.gpkg", "single class", "at least two")


def test_labels_no_field_looks_like_a_class_field(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2)], [1, 2], area=[1.5, 2.25]).drop(columns="class_id").to_file(tmp_path / "area.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "area.gpkg", "-o",
                        tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "area.gpkg: no field looks like a class field",
                          "choose one with --class-field from: area (float64)")


def test_labels_class_field_empty(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2)], [None, None]).to_file(tmp_path / "blank.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "blank.gpkg", "--class-field",
                        "class_id", "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "blank.gpkg: field 'class_id' is empty in every feature", "fill in the classes")


def test_labels_class_field_of_another_type(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2)], [1, 2], area=[1.5, 2.25]).to_file(tmp_path / "area.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "area.gpkg", "--class-field",
                        "area", "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "area.gpkg: field 'area' holds float values",
                          "must be all integers or all text", "pick another field")


def speck(col: int, row: int):
    """A polygon inside pixel (row, col) that holds no pixel centre."""
    from shapely.geometry import box

    x0, y0 = ORIGIN
    return box(x0 + (col + 0.6) * PIXEL, y0 - (row + 0.9) * PIXEL, x0 + (col + 0.9) * PIXEL, y0 - (row + 0.6) * PIXEL)


def test_labels_cover_no_pixel_centre(workspace, capsys, tmp_path):
    frame([speck(3, 3), speck(20, 5)], [1, 2]).to_file(tmp_path / "specks.gpkg")
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "specks.gpkg", "--class-field",
                        "class_id", "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "specks.gpkg: the labels cover no pixel centre of the scene",
                          "use larger polygons, points, or a finer scene")


@pytest.mark.parametrize("case", ["between pixel centres", "over nodata"])
def test_labels_class_without_a_valid_pixel(workspace, capsys, tmp_path, case):
    scene = workspace["scene"]
    if case == "over nodata":  # class 3's stripe is nodata in the scene
        cube = workspace["cube"].copy()
        cube[:, :, 28:] = -9999
        scene = raster(tmp_path / "hole.tif", cube, nodata=-9999)
        water = stripe(3)
    else:
        water = speck(35, 5)
    frame([stripe(1), stripe(2), water], [1, 2, 3], class_name=["roof", "tree", "water"]).to_file(
        tmp_path / "l.gpkg")
    code, err = run_cli(capsys, "train", scene, "--labels", tmp_path / "l.gpkg", "--class-field", "class_id",
                        "-o", tmp_path / "m.cssd", *FAST)
    assert_one_line_error(code, err, "class 'water' (id 3) covers no valid pixel centre of the scene",
                          "remove it from the labels or enlarge its polygons")
    assert not (tmp_path / "m.cssd").exists()


@pytest.mark.parametrize("ids, needles", [
    ([-1, 1, 2], ["class ids must be >= 0 to be stored in a map, got -1", "renumber the classes"]),
    ([1, 2, 70000], ["class id 70000 is too large for a map (max 65535)", "renumber the classes"]),
])
def test_class_ids_a_map_cannot_store(workspace, capsys, tmp_path, ids, needles):
    frame([stripe(1), stripe(2), stripe(3)], ids).to_file(tmp_path / "ids.gpkg")
    model, out = tmp_path / "ids.cssd", tmp_path / "m.tif"
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "ids.gpkg", "--class-field",
                        "class_id", "-o", model, *FAST)
    assert code == 0, err  # training takes them; the map cannot
    code, err = run_cli(capsys, "predict", model, workspace["scene"], "-o", out)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


# --- model -----------------------------------------------------------------------------------

def test_model_missing(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "predict", tmp_path / "gone.cssd", workspace["scene"], "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "gone.cssd", "not found")


def test_model_not_a_model_file(workspace, capsys, tmp_path):
    (tmp_path / "fake.cssd").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    code, err = run_cli(capsys, "predict", tmp_path / "fake.cssd", workspace["scene"], "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "fake.cssd", "not a cssd-geo model file")


def test_model_pickle_with_code_is_refused(workspace, capsys, tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.cssd").write_bytes(pickle.dumps(Payload()))
    code, err = run_cli(capsys, "predict", tmp_path / "evil.cssd", workspace["scene"], "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "evil.cssd")
    assert not marker.exists()


def test_model_from_an_incompatible_version(workspace, capsys, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(workspace["model"], "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in meta if "cssd" in k.lower())
    header = json.loads(meta[key])
    header["format_version"] = 99
    save_file(tensors, str(tmp_path / "future.cssd"), metadata={**meta, key: json.dumps(header)})
    code, err = run_cli(capsys, "predict", tmp_path / "future.cssd", workspace["scene"], "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "future.cssd", "99")


def _model_parts(path) -> tuple[dict, dict, dict]:
    """The tensors, the safetensors metadata and the cssd-geo header of a model file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta, json.loads(meta["cssd_geo"])


@pytest.mark.parametrize("metadata, needles", [
    (None, ["a safetensors file but not a cssd-geo model (no cssd-geo metadata)"]),
    ({"format": "pt"}, ["a safetensors file but not a cssd-geo model (no cssd-geo metadata)"]),
    ({"cssd_geo": json.dumps({"format": "other-tool", "format_version": 1})}, ["not a cssd-geo model file;"]),
])
def test_model_safetensors_not_written_by_cssd_geo(workspace, capsys, tmp_path, metadata, needles):
    from safetensors.torch import save_file

    tensors, _, _ = _model_parts(workspace["model"])
    save_file(tensors, str(tmp_path / "weights.safetensors"), metadata=metadata)
    code, err = run_cli(capsys, "predict", tmp_path / "weights.safetensors", workspace["scene"], "-o",
                        tmp_path / "m.tif")
    assert_one_line_error(code, err, "weights.safetensors: ", *needles, "give a file written by 'cssd-geo train'")


def test_model_architecture_this_version_cannot_build(workspace, capsys, tmp_path):
    from safetensors.torch import save_file

    tensors, _, header = _model_parts(workspace["model"])
    header["architecture"]["config"]["dropout"] = 0.1  # a setting from a newer cssd-geo
    save_file(tensors, str(tmp_path / "newer.cssd"), metadata={"cssd_geo": json.dumps(header)})
    code, err = run_cli(capsys, "predict", tmp_path / "newer.cssd", workspace["scene"], "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "newer.cssd: the stored architecture is not one this version builds",
                          "unknown model settings ['dropout']", "retrain the model or use the cssd-geo version")


@pytest.mark.parametrize("damage", ["tensor missing", "other architecture"])
def test_model_weights_do_not_match_the_architecture(workspace, capsys, tmp_path, damage):
    from safetensors.torch import save_file

    tensors, _, header = _model_parts(workspace["model"])
    if damage == "tensor missing":
        del tensors[sorted(tensors)[0]]
    else:
        header["architecture"]["config"]["refiner_depth"] = 1
    save_file(tensors, str(tmp_path / "bad.cssd"), metadata={"cssd_geo": json.dumps(header)})
    code, err = run_cli(capsys, "predict", tmp_path / "bad.cssd", workspace["scene"], "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "bad.cssd: the weights do not match the stored architecture",
                          "the file is damaged, retrain the model")


def test_model_bands_missing_from_the_scene(workspace, capsys, tmp_path):
    other = write_scene(tmp_path / "ten.tif", make_cube(36, 42, 10))
    code, err = run_cli(capsys, "predict", workspace["model"], other, "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "ten.tif: lacks 2 of the 12 bands model", "model.cssd uses: 11 'B11' (550.0 nm), "
                          "12 'B12' (560.0 nm); predict on a scene from the same sensor with these bands")


def test_model_band_count_mismatch_without_band_metadata(workspace, capsys, tmp_path):
    other = raster(tmp_path / "ten.tif", make_cube(36, 42, 10))  # no band names, no wavelengths
    code, err = run_cli(capsys, "predict", workspace["model"], other, "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "ten.tif: has 10 bands and neither band names nor wavelengths, but model",
                          "was trained on a 12-band scene; predict on a scene from the same sensor and band subset")


def test_model_wavelength_mismatch(workspace, capsys, tmp_path):
    shifted = write_scene(tmp_path / "shifted.tif", workspace["cube"])
    with rasterio.open(shifted, "r+") as ds:
        ds.update_tags(5, wavelength="900")
    code, err = run_cli(capsys, "predict", workspace["model"], shifted, "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "shifted.tif: lacks 1 of the 12 bands model", "uses: 5 'B5' (490.0 nm);")


def test_model_band_name_mismatch(workspace, capsys, tmp_path):
    renamed = write_scene(tmp_path / "renamed.tif", workspace["cube"], wavelengths=False)  # bands known by name
    with rasterio.open(renamed, "r+") as ds:
        ds.set_band_description(4, "NIR")
    code, err = run_cli(capsys, "predict", workspace["model"], renamed, "-o", tmp_path / "m.tif")
    assert_one_line_error(code, err, "renamed.tif: lacks 1 of the 12 bands model", "uses: 4 'B4' (480.0 nm);")
    assert not (tmp_path / "m.tif").exists()


# --- output ----------------------------------------------------------------------------------

def test_output_folder_missing(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "no" / "m.tif")
    assert_one_line_error(code, err, "m.tif", "does not exist", "create it")


def test_output_folder_read_only(workspace, capsys, tmp_path):
    if os.geteuid() == 0:
        folder = "/proc"  # not writable even for root
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", os.path.join(folder, "m.tif"))
    assert_one_line_error(code, err, "m.tif", "not writable", "choose another output path")


def test_output_equals_input(workspace, capsys):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", workspace["scene"],
                        "--overwrite")
    assert_one_line_error(code, err, "scene.tif", "also an input")
    with rasterio.open(workspace["scene"]) as ds:
        assert ds.count == 12


def test_output_exists(workspace, capsys, tmp_path):
    out = tmp_path / "m.tif"
    out.write_text("keep me")
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", out)
    assert_one_line_error(code, err, "m.tif", "already exists", "--overwrite")
    assert out.read_text() == "keep me"


def test_output_extension_unknown(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.png")
    assert_one_line_error(code, err, "m.png: give an output name ending in .tif (GeoTIFF) or .zarr (Zarr store)")
    assert os.listdir(tmp_path) == []


def test_output_cog_with_zarr(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.zarr", "--cog")
    assert_one_line_error(code, err, "m.zarr: --cog makes a GeoTIFF", "drop it or write a .tif")
    assert os.listdir(tmp_path) == []


def test_quicklook_of_a_map_with_large_class_ids(workspace, capsys, tmp_path):
    frame([stripe(1), stripe(2), stripe(3)], [1, 2, 300]).to_file(tmp_path / "ids.gpkg")
    model = tmp_path / "ids.cssd"
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", tmp_path / "ids.gpkg", "--class-field",
                        "class_id", "-o", model, *FAST)
    assert code == 0, err
    maps = tmp_path / "maps"
    maps.mkdir()
    code, err = run_cli(capsys, "predict", model, workspace["scene"], "-o", maps / "m.tif", "--quicklook",
                        maps / "m.png")
    assert_one_line_error(code, err, "m.tif: a quicklook needs a map with at most 255 classes")
    assert os.listdir(maps) == []  # neither the map nor the quicklook


class FullDisk:
    """Stands in for an open output (rasterio dataset or zarr array): the first block is
    written, then every write fails like a full disk."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _fail_after_first(self) -> None:
        self.calls += 1
        if self.calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    def write(self, *args, **kwargs):
        self._fail_after_first()
        return self.inner.write(*args, **kwargs)

    def __setitem__(self, key, value):
        self._fail_after_first()
        self.inner[key] = value


@pytest.mark.parametrize("output", ["m.tif", "m.zarr"])
def test_output_disk_full_leaves_nothing(workspace, capsys, tmp_path, monkeypatch, output):
    from cssd_geo.io import writers

    real_open, real_init = writers.GeoTiffWriter._open, writers._GuardedTarget.__init__

    def open_full(self):
        real_open(self)
        self.ds = FullDisk(self.ds)

    def init_full(self, array, path):
        real_init(self, FullDisk(array), path)

    monkeypatch.setattr(writers.GeoTiffWriter, "_open", open_full)
    monkeypatch.setattr(writers._GuardedTarget, "__init__", init_full)
    folder = tmp_path / "maps"
    folder.mkdir()
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", folder / output,
                        "--chunk", "16")
    assert_one_line_error(code, err, output, "writing failed", "No space left on device", "free space")
    assert os.listdir(folder) == []


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needles", [
    (["--shots", "0"], ["--shots 0", "at least 1"]),
    (["--patch", "1"], ["--patch 1", "odd and at least 3"]),
    (["--device", "tpu"], ["--device tpu", "unknown device", "auto, cpu, cuda"]),
    (["--epochs", "0"], ["--epochs 0", "train for at least 1 epoch", "leave it out for the default"]),
    (["--grid-stride", "0"], ["--grid-stride 0", "the stride must be at least 1"]),
    (["--batch-size", "0"], ["--batch-size 0", "must be at least 1"]),
    (["--se-size", "2"], ["--se-size 2", "the structuring element side must be odd (e.g. 3)"]),
    (["--refiner-depth", "-1"], ["--refiner-depth -1", "use 0 (no SpeFR) or more"]),
    (["--eps", "1.5"], ["--eps 1.5", "the distillation weight must lie in 0..1"]),
    (["--tau", "0"], ["--tau 0.0", "the temperature must be positive"]),
    (["--unlabelled", "-1"], ["--unlabelled -1", "or 0 to train on the labelled pixels alone"]),
    (["--teacher-threshold", "1.5"], ["--teacher-threshold 1.5", "the confidence must lie in 0..1"]),
])
def test_bad_train_options(workspace, capsys, tmp_path, argv, needles):
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", workspace["labels"], "-o",
                        tmp_path / "m.cssd", *argv)
    assert_one_line_error(code, err, *needles)


def test_chunk_smaller_than_the_halo(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.tif",
                        "--chunk", "3")
    assert_one_line_error(code, err, "--chunk 3", "halo of 6 pixels", "at least 6")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.tif",
                        "--device", "cuda")
    assert_one_line_error(code, err, "--device cuda", "CUDA is not available", "--device cpu")


@pytest.mark.parametrize("step, config, message", [
    ("train", cssd_geo.TrainConfig(sampling="stratified"), "--sampling stratified: choose random or grid"),
    ("train", cssd_geo.TrainConfig(schedule="step"), "--schedule step: choose cosine or plateau"),
    ("train", cssd_geo.TrainConfig(model=cssd_geo.ModelConfig(pooling="max")),
     "--pooling max: choose 'sap' (spectral-aware) or 'mean'"),
    ("train", cssd_geo.TrainConfig(model=cssd_geo.ModelConfig(refiner="erosion")),
     "--refiner erosion: choose 'weighted' (SpeFR) or 'dilation'"),
    ("train", cssd_geo.TrainConfig(model=cssd_geo.ModelConfig(heads="aux")),
     "--heads aux: choose 'window', 'both' or 'spectral'"),
    ("train", cssd_geo.TrainConfig(model=cssd_geo.ModelConfig(heads="spectral", auxiliary=False)),
     "--heads spectral needs the centre-spectrum classifier: leave out --no-auxiliary"),
    ("predict", cssd_geo.PredictConfig(precision="fp8"), "--precision fp8: choose fp32 or bf16 or fp16"),
])
def test_bad_choices_through_the_api(workspace, tmp_path, step, config, message):
    # the CLI's own choices refuse these first; the API and QGIS reach the config's check
    with pytest.raises(CssdError) as caught:
        if step == "train":
            cssd_geo.train(workspace["scene"], workspace["labels"], tmp_path / "m.cssd", config)
        else:
            cssd_geo.predict(workspace["model"], workspace["scene"], tmp_path / "m.tif", config)
    assert str(caught.value) == message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_reduced_precision_on_the_cpu(workspace, capsys, tmp_path, device, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto finds no GPU, as on CI
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.tif",
                        "--precision", "bf16", "--device", device)
    assert_one_line_error(code, err, "--precision bf16: reduced precision runs on CUDA only, and this run computes "
                          "on the CPU", "leave --precision out (fp32), or predict on a GPU (--device cuda)")
    assert os.listdir(tmp_path) == []


def test_resume_refusals(workspace, capsys, tmp_path):
    out = tmp_path / "m.tif"
    state = tmp_path / ".m.tif.resume"
    state.mkdir()
    (state / "request.json").write_text('{"chunk": 7}')  # left by a run with other options
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", out, "--resume")
    assert_one_line_error(code, err, ".m.tif.resume: holds an unfinished run of another request (differs in ",
                          "run the same command as then, or delete that folder to start again")
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "c.tif",
                        "--resume", "--scheduler", "tcp://127.0.0.1:8786")
    assert_one_line_error(code, err, "--resume runs on this machine: drop --scheduler",
                          "a cluster already survives a lost worker")
    with pytest.raises(CssdError, match="--resume needs the model and the scene as files"):
        cssd_geo.predict(cssd_geo.load_model(workspace["model"]), workspace["scene"], tmp_path / "d.tif",
                         cssd_geo.PredictConfig(resume=True))
    assert sorted(os.listdir(tmp_path)) == [".m.tif.resume"]


@pytest.mark.parametrize("chunk", ["0", "-64"])
def test_chunk_not_positive(workspace, capsys, tmp_path, chunk):
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.tif",
                        "--chunk", chunk)
    assert_one_line_error(code, err, f"--chunk {chunk}: the chunk side must be a positive number of pixels",
                          "leave it out to size chunks from memory")


def test_cuda_device_that_does_not_exist(workspace, capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = run_cli(capsys, "train", workspace["scene"], "--labels", workspace["labels"], "-o",
                        tmp_path / "m.cssd", *FAST, "--device", "cuda:7")
    assert_one_line_error(code, err, "--device cuda:7: no such GPU (this machine has 1)", "use cuda:0..cuda:0")


# --- cluster (--scheduler) -------------------------------------------------------------------

def _free_address() -> str:
    """A TCP address on this machine where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_scheduler_unreachable(workspace, capsys, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    try:  # wait 2 s, not the default 30 s, for the scheduler that is not there
        monkeypatch.setattr(importlib.import_module("cssd_geo.runner"), "SCHEDULER_TIMEOUT", "2s")
    except (ImportError, AttributeError):
        pass
    address = _free_address()
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.tif",
                        "--scheduler", address)
    assert_one_line_error(code, err, f"--scheduler {address}: cannot reach the Dask scheduler (",
                          "check the address and that the cluster is running")
    assert os.listdir(tmp_path) == []


def test_scheduler_without_the_cluster_extra(workspace, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    code, err = run_cli(capsys, "predict", workspace["model"], workspace["scene"], "-o", tmp_path / "m.tif",
                        "--scheduler", "tcp://127.0.0.1:8786")
    assert_one_line_error(code, err, "--scheduler tcp://127.0.0.1:8786: a cluster run needs the 'distributed' "
                                     "package, which is not installed; "
                                     "install it with: pip install 'cssd-geo[cluster]'")
    assert os.listdir(tmp_path) == []


def test_scheduler_with_an_in_memory_model(workspace, tmp_path):
    model = cssd_geo.load_model(workspace["model"])
    with pytest.raises(CssdError) as caught:
        cssd_geo.predict(model, workspace["scene"], tmp_path / "m.tif",
                         cssd_geo.PredictConfig(scheduler="tcp://127.0.0.1:8786"))
    assert str(caught.value) == "a cluster run loads the model on each worker: pass the model file path"
    assert os.listdir(tmp_path) == []


# --- evaluate --------------------------------------------------------------------------------

def test_evaluate_map_missing(workspace, capsys, tmp_path):
    code, err = run_cli(capsys, "evaluate", tmp_path / "nomap.tif", "--labels", workspace["labels"])
    assert_one_line_error(code, err, "nomap.tif: map file not found", "check the path")


def test_evaluate_map_not_a_raster(workspace, capsys, tmp_path):
    (tmp_path / "notes.tif").write_text("field notes, not pixels")
    code, err = run_cli(capsys, "evaluate", tmp_path / "notes.tif", "--labels", workspace["labels"])
    assert_one_line_error(code, err, "notes.tif: not a raster GDAL can read",
                          "give a map written by 'cssd-geo predict'")


def test_evaluate_map_without_class_table(workspace, capsys):
    # the scene instead of its map: a raster with neither cssd-geo class tags nor a colour table
    code, err = run_cli(capsys, "evaluate", workspace["scene"], "--labels", workspace["labels"])
    assert_one_line_error(code, err, "scene.tif: has no class table (no cssd-geo tags or colour table)",
                          "give a map written by 'cssd-geo predict'")


def test_evaluate_labels_outside_the_map(class_map, capsys, tmp_path):
    from shapely.affinity import translate

    frame([translate(stripe(1), 1e5), translate(stripe(2), 1e5)], [1, 2]).to_file(tmp_path / "far.gpkg")
    code, err = run_cli(capsys, "evaluate", class_map, "--labels", tmp_path / "far.gpkg", "--class-field", "class_id")
    assert_one_line_error(code, err, "far.gpkg: no label falls inside the scene", "use labels that overlap the scene")


def test_evaluate_labels_with_no_class_of_the_map(class_map, capsys, tmp_path):
    frame([stripe(1), stripe(2)], [7, 8]).to_file(tmp_path / "other.gpkg")
    code, err = run_cli(capsys, "evaluate", class_map, "--labels", tmp_path / "other.gpkg", "--class-field",
                        "class_id")
    assert_one_line_error(code, err, "other.gpkg: no feature has a class of the model/map", "check --class-field")
    assert "2 label features have classes the map does not know; they were left out" in err


def test_evaluate_labels_only_over_nodata(workspace, capsys, tmp_path):
    cube = workspace["cube"].copy()
    cube[:, :, 28:] = -9999  # class 3's stripe is nodata, so it is nodata in the map
    scene = raster(tmp_path / "hole.tif", cube, nodata=-9999)
    assert run_cli(capsys, "predict", workspace["model"], scene, "-o", tmp_path / "map.tif")[0] == 0
    frame([stripe(3)], [3], class_name=["water"]).to_file(tmp_path / "water.gpkg")
    code, err = run_cli(capsys, "evaluate", tmp_path / "map.tif", "--labels", tmp_path / "water.gpkg",
                        "--class-field", "class_id", "--json", tmp_path / "metrics.json")
    assert_one_line_error(code, err, "no labelled pixel overlaps a valid map pixel",
                          "check that labels and map cover the same area")
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_evaluate_report_path_problems(workspace, class_map, capsys, tmp_path, option):
    name = "metrics.json" if option == "--json" else "confusion.png"
    code, err = run_cli(capsys, "evaluate", class_map, "--labels", workspace["labels"], option,
                        tmp_path / "no" / name)
    assert_one_line_error(code, err, f"{name}: the folder", "does not exist", "create it or choose another output path")
    code, err = run_cli(capsys, "evaluate", class_map, "--labels", workspace["labels"], option, class_map)
    assert_one_line_error(code, err, "map.tif: the output path is also an input", "write to another file")
    with rasterio.open(class_map) as ds:  # the map is untouched
        assert ds.count == 1 and ds.height == 36


# --- interruption ----------------------------------------------------------------------------

def test_interrupted_training_writes_no_model(workspace, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "cssd-geo")
    model = tmp_path / "m.cssd"
    proc = subprocess.Popen([exe, "--json-progress", "train", workspace["scene"], "--labels", workspace["labels"],
                             "-o", str(model), "--epochs", "500", "--shots", "4", "--patch", "5", "--device", "cpu"],
                            stderr=subprocess.PIPE, text=True,
                            # started with SIGINT ignored, as a script's '&' job is: it must stop all the same
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    for line in proc.stderr:  # wait until epochs are running
        if line.startswith('{"advance"'):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(60) == 130
    assert "interrupted" in rest and "Traceback" not in rest
    time.sleep(0.1)
    assert os.listdir(tmp_path) == []


class StopAtOnce(cssd_geo.Progress):
    """A progress receiver whose user has asked to stop (QGIS's Cancel, a GUI's stop button)."""

    def cancelled(self) -> bool:
        return True


def test_cancel_through_the_progress(workspace, tmp_path):
    config = cssd_geo.TrainConfig(epochs=1, shots=2, device="cpu", model=cssd_geo.ModelConfig(patch=5))
    with pytest.raises(cssd_geo.Cancelled) as caught:
        cssd_geo.train(workspace["scene"], workspace["labels"], tmp_path / "m.cssd", config, StopAtOnce())
    assert str(caught.value) == "cancelled: training was stopped before it finished; nothing was written"
    with pytest.raises(cssd_geo.Cancelled) as caught:
        cssd_geo.predict(workspace["model"], workspace["scene"], tmp_path / "m.tif",
                         cssd_geo.PredictConfig(device="cpu"), StopAtOnce())
    assert str(caught.value) == "cancelled: prediction was stopped before it finished; nothing was written"
    assert isinstance(caught.value, CssdError)  # a CLI or a plugin shows it like any other error
    assert os.listdir(tmp_path) == []


def test_every_test_docs_errors_names_exists():
    """The test column of docs/errors.md names real tests (``name`` = tests/test_errors.py)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    named: list[tuple[str, str]] = []
    for line in (root / "docs" / "errors.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[-1].startswith("`test"):
            for ref in re.findall(r"`([^`]+)`", cells[-1]):
                file, _, name = ref.rpartition("::")
                named.append((file or "test_errors.py", name))
    assert len(named) > 50
    missing = [f"{file}::{name}" for file, name in named
               if not re.search(rf"^def {re.escape(name)}\(", (root / "tests" / file).read_text()
                                if (root / "tests" / file).is_file() else "", re.MULTILINE)]
    assert missing == []
