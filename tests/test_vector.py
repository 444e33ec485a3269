import geopandas as gpd
import numpy as np
import pytest
from rasterio.crs import CRS as CRS_
from rasterio.transform import from_origin
from shapely.geometry import Point, box

from cssd_geo.errors import CssdError
from cssd_geo.io.scene import Grid
from cssd_geo.io.vector import rasterize_labels, read_labels
from tests.conftest import CRS, ORIGIN, PIXEL

GRID = Grid(CRS_.from_string(CRS), from_origin(*ORIGIN, PIXEL, PIXEL), 1000, 1200)


def _rect(r0, r1, c0, c1):
    """Rectangle covering pixel rows r0..r1-1 and columns c0..c1-1 (edges a third of a pixel inside)."""
    x0, y0 = ORIGIN
    return box(x0 + (c0 + 0.3) * PIXEL, y0 - (r1 - 0.3) * PIXEL, x0 + (c1 - 0.3) * PIXEL, y0 - (r0 + 0.3) * PIXEL)


def test_labels_in_another_crs_land_on_the_right_pixels(tmp_path):
    frame = gpd.GeoDataFrame({"cls": ["wheat", "maize"]},
                             geometry=[_rect(700, 705, 900, 910),
                                       Point(ORIGIN[0] + 950.5 * PIXEL, ORIGIN[1] - 720.5 * PIXEL)],
                             crs=CRS)
    path = tmp_path / "labels.geojson"
    frame.to_crs("EPSG:4326").to_file(path, engine="pyogrio")
    labels = read_labels(path, GRID.crs, "cls")
    assert [c.name for c in labels.classes] == ["maize", "wheat"]  # text classes in sorted order
    assert [c.id for c in labels.classes] == [1, 2]
    raster = rasterize_labels(labels, GRID)
    rows, cols, index = raster.rows, raster.cols, raster.index
    wheat = index == 1
    assert set(zip(rows[wheat], cols[wheat], strict=True)) == {(r, c) for r in range(700, 705) for c in range(900, 910)}
    assert list(zip(rows[~wheat], cols[~wheat], strict=True)) == [(720, 950)]


def test_fields_far_apart_cost_their_area_not_their_extent(tmp_path, monkeypatch):
    from rasterio import features

    huge = Grid(GRID.crs, GRID.transform, 200_000, 300_000)  # a continental mosaic's grid
    frame = gpd.GeoDataFrame({"c": [1, 2, 2]}, geometry=[_rect(3, 9, 5, 8), _rect(199_990, 199_995, 299_980, 299_990),
                                                          _rect(100_000, 100_002, 4, 6)], crs=CRS)
    path = tmp_path / "far.gpkg"
    frame.to_file(path, engine="pyogrio")
    burnt = []
    real = features.rasterize

    def recording(shapes, out_shape, **kw):
        burnt.append(out_shape)
        return real(shapes, out_shape=out_shape, **kw)

    monkeypatch.setattr(features, "rasterize", recording)
    raster = rasterize_labels(read_labels(path, huge.crs, "c"), huge)
    assert len(raster) == 6 * 3 + 5 * 10 + 2 * 2
    assert sorted(set(zip(raster.rows[raster.index == 0], raster.cols[raster.index == 0], strict=True))) == \
        [(r, c) for r in range(3, 9) for c in range(5, 8)]
    assert (raster.rows[:-50] < raster.rows[1:-49]).any() and (np.diff(raster.rows) >= 0).all()  # row-major
    # only the three blocks that hold a field were burnt, each at most LABEL_BLOCK square
    assert len(burnt) == 3 and all(h <= 2048 and w <= 2048 for h, w in burnt)


def test_overlapping_features_give_the_later_one_whatever_the_blocks(tmp_path):
    frame = gpd.GeoDataFrame({"c": [1, 2, 3, 1]}, geometry=[_rect(0, 30, 0, 30), _rect(10, 20, 10, 40),
                                                             _rect(5, 25, 25, 28), Point(*ORIGIN).buffer(1)], crs=CRS)
    path = tmp_path / "overlap.gpkg"
    frame.to_file(path, engine="pyogrio")
    labels = read_labels(path, GRID.crs, "c")
    whole, blocks = rasterize_labels(labels, GRID), rasterize_labels(labels, GRID, block=7)
    for name in ("rows", "cols", "index"):
        assert getattr(whole, name).tolist() == getattr(blocks, name).tolist()
    dense = np.full((40, 50), -1)
    dense[whole.rows, whole.cols] = whole.index
    assert dense[15, 15] == 1 and dense[15, 26] == 2 and dense[7, 26] == 2 and dense[4, 26] == 0  # later wins


def test_class_field_is_guessed_when_one_is_plausible(tmp_path):
    frame = gpd.GeoDataFrame({"fid": range(30), "code": [1, 2, 3] * 10, "label": ["a", "b", "c"] * 10,
                              "area": np.linspace(1, 2, 30)},
                             geometry=[_rect(i, i + 1, 0, 1) for i in range(30)], crs=CRS)
    path = tmp_path / "l.gpkg"
    frame.to_file(path, engine="pyogrio")
    labels = read_labels(path, GRID.crs)
    assert labels.class_field == "code"  # the integer of an id/name pair; names from its partner
    assert [(c.id, c.name) for c in labels.classes] == [(1, "a"), (2, "b"), (3, "c")]
    frame["other"] = ["x", "y"] * 15
    frame.to_file(path, engine="pyogrio")
    with pytest.raises(CssdError, match="--class-field") as err:
        read_labels(path, GRID.crs)
    assert "code" in str(err.value) and "other" in str(err.value)
    with pytest.raises(CssdError, match="no field 'klass'"):
        read_labels(path, GRID.crs, "klass")


def test_labels_outside_the_scene_are_refused(tmp_path):
    frame = gpd.GeoDataFrame({"c": [1, 2]}, geometry=[_rect(-50, -40, 0, 5), _rect(-60, -55, 0, 5)], crs=CRS)
    path = tmp_path / "out.gpkg"
    frame.to_file(path, engine="pyogrio")
    with pytest.raises(CssdError, match="no label falls inside the scene"):
        rasterize_labels(read_labels(path, GRID.crs, "c"), GRID)


def test_layer_without_crs_is_refused(tmp_path):
    frame = gpd.GeoDataFrame({"c": [1, 2]}, geometry=[_rect(0, 2, 0, 2), _rect(3, 5, 0, 2)])
    frame.to_file(tmp_path / "nocrs.shp", engine="pyogrio")  # no .prj
    with pytest.raises(CssdError, match="no CRS"):
        read_labels(tmp_path / "nocrs.shp", GRID.crs, "c")
