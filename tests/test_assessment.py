"""cssd-geo sample and area: the stratified sample of a class map, and the good-practice
estimators of area and accuracy checked against the worked example of Olofsson et al. (2014)."""
from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from cssd_geo import AreaConfig, CssdError, SampleConfig, draw_sample, estimate_area
from cssd_geo.assessment import allocate, stratified_estimates
from cssd_geo.classes import make_class_table
from cssd_geo.cli import main
from cssd_geo.io.scene import Grid
from cssd_geo.io.writers import ClassMapWriter
from cssd_geo.outputs import OutputSet
from tests.conftest import CRS, ORIGIN, PIXEL

# the worked example (Olofsson et al. 2014, section 5): error matrix of sample counts (rows: map
# class = stratum, columns: reference class) and the mapped area of each class in 30 m pixels
NAMES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
MAPPED = np.array([200_000, 150_000, 3_200_000, 6_450_000])
# its published estimates: area (ha) +- 95 % half-interval, user's accuracy +- half-interval
PUBLISHED_HA = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
PUBLISHED_USERS = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
PUBLISHED_OVERALL = (0.95, 0.02)


def by_hand(n: np.ndarray, mapped: np.ndarray) -> dict[str, list[float]]:
    """The published formulas (equations 2-10), written out term by term."""
    k = len(mapped)
    total = float(sum(mapped))
    w = [m / total for m in mapped]
    row = [float(sum(n[i])) for i in range(k)]
    p = [[w[i] * n[i][j] / row[i] for j in range(k)] for i in range(k)]
    col = [sum(p[i][j] for i in range(k)) for j in range(k)]
    share_se = [math.sqrt(sum(w[i] ** 2 * (n[i][j] / row[i]) * (1 - n[i][j] / row[i]) / (row[i] - 1)
                              for i in range(k))) for j in range(k)]
    users = [p[i][i] / sum(p[i]) for i in range(k)]
    users_var = [users[i] * (1 - users[i]) / (row[i] - 1) for i in range(k)]
    overall = sum(p[i][i] for i in range(k))
    overall_se = math.sqrt(sum(w[i] ** 2 * users[i] * (1 - users[i]) / (row[i] - 1) for i in range(k)))
    producers = [p[j][j] / col[j] for j in range(k)]
    producers_se = []
    for j in range(k):
        n_j = sum(mapped[i] / row[i] * n[i][j] for i in range(k))
        own = mapped[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (row[j] - 1)
        others = producers[j] ** 2 * sum(mapped[i] ** 2 * n[i][j] / row[i] * (1 - n[i][j] / row[i]) / (row[i] - 1)
                                         for i in range(k) if i != j)
        producers_se.append(math.sqrt((own + others) / n_j ** 2))
    return {"share": col, "share_se": share_se, "users": users, "users_se": [math.sqrt(v) for v in users_var],
            "producers": producers, "producers_se": producers_se, "overall": [overall], "overall_se": [overall_se]}


def test_stratified_estimates_are_the_worked_example():
    e = stratified_estimates(COUNTS, MAPPED)
    hand = by_hand(COUNTS.tolist(), MAPPED.tolist())
    z = 1.959964
    np.testing.assert_allclose(e.area_share, hand["share"], rtol=1e-12)
    np.testing.assert_allclose(e.area_share_ci, z * np.array(hand["share_se"]), rtol=1e-12)
    np.testing.assert_allclose(e.users, hand["users"], rtol=1e-12)
    np.testing.assert_allclose(e.users_ci, z * np.array(hand["users_se"]), rtol=1e-12)
    np.testing.assert_allclose(e.producers, hand["producers"], rtol=1e-12)
    np.testing.assert_allclose(e.producers_ci, z * np.array(hand["producers_se"]), rtol=1e-12)
    assert e.overall == pytest.approx(hand["overall"][0]) and e.overall_ci == pytest.approx(z * hand["overall_se"][0])
    # the published figures (rounded there to the hectare and to two decimals)
    total_ha = MAPPED.sum() * 0.09
    for k, (area, ci) in enumerate(PUBLISHED_HA):
        assert e.area_share[k] * total_ha == pytest.approx(area, abs=1)
        assert e.area_share_ci[k] * total_ha == pytest.approx(ci, abs=1)
    for k, (users, ci) in enumerate(PUBLISHED_USERS):
        assert round(e.users[k], 2) == users and round(e.users_ci[k], 2) == ci
    assert (round(e.overall, 2), round(e.overall_ci, 2)) == PUBLISHED_OVERALL


def test_a_stratum_with_one_point_has_an_estimate_but_no_interval():
    e = stratified_estimates(np.array([[1, 0], [3, 7]]), np.array([50, 950]))
    assert e.users[0] == 1.0 and np.isnan(e.users_ci[0])
    assert np.isfinite(e.users_ci[1]) and e.area_share.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("pixels, points, minimum, expected", [
    ([1000, 9000], 100, 20, [20, 80]),  # the small class raised to the minimum, the rest by area
    ([10, 90, 900], 100, 20, [10, 20, 70]),  # a class with fewer pixels than the minimum gives them all
    ([500, 500, 0], 7, 50, [4, 3, 0]),  # too few points for the minimum: shared out, none to unmapped
    ([3, 4], 100, 2, [3, 4]),  # more points than pixels: every pixel
])
def test_allocation(pixels, points, minimum, expected):
    assert allocate(np.array(pixels), points, minimum).tolist() == expected


def write_map(path, values: np.ndarray, names: list[str], nodata_where: np.ndarray | None = None) -> str:
    """A class map as 'cssd-geo predict' writes it (class ids 1..K, colour table, class tags)."""
    classes = make_class_table(list(range(1, len(names) + 1)), names)
    grid = Grid(rasterio.crs.CRS.from_user_input(CRS), from_origin(*ORIGIN, PIXEL, PIXEL), *values.shape)
    with OutputSet() as outputs, ClassMapWriter(str(path), grid, classes, outputs) as writer:
        values = values.copy()
        if nodata_where is not None:
            values[nodata_where] = writer.map_nodata
        writer[0:values.shape[0], 0:values.shape[1]] = values
    return str(path)


def example_map(tmp_path) -> tuple[str, np.ndarray]:
    """The worked example at 1/1000 of its area: 10,000 pixels of 30 m in its proportions."""
    values = np.repeat(np.arange(1, 5), MAPPED // 1000).reshape(100, 100)
    return write_map(tmp_path / "map.tif", values, NAMES), values


def test_area_from_labelled_points_through_the_cli(tmp_path, capsys):
    path, values = example_map(tmp_path)
    rng = np.random.default_rng(0)
    points, reference = [], []
    for i in range(4):  # each stratum's points on pixels of its class, labelled as the error matrix says
        rows, cols = np.nonzero(values == i + 1)
        chosen = rng.choice(rows.size, COUNTS[i].sum(), replace=False)
        points += [(ORIGIN[0] + (cols[c] + 0.5) * PIXEL, ORIGIN[1] - (rows[c] + 0.5) * PIXEL) for c in chosen]
        reference += [j + 1 for j in range(4) for _ in range(COUNTS[i, j])]
    points.append((ORIGIN[0] - 100 * PIXEL, ORIGIN[1]))  # outside the map: left out, and said
    reference.append(1)
    frame = gpd.GeoDataFrame({"truth": reference}, geometry=gpd.points_from_xy(*zip(*points, strict=True)), crs=CRS)
    frame.to_file(tmp_path / "points.gpkg", engine="pyogrio")
    assert main(["--quiet", "area", path, "--labels", str(tmp_path / "points.gpkg"), "--class-field", "truth",
                 "--json", str(tmp_path / "area.json"), "--csv", str(tmp_path / "area.csv")]) == 0
    out = capsys.readouterr().out
    assert "overall accuracy   94.7 ± 1.8 %" in out and "1 points lie outside the map; they were left out" in out
    result = json.loads((tmp_path / "area.json").read_text())
    assert result["error_matrix"] == COUNTS.tolist() and result["pixel_area_m2"] == pytest.approx(900.0)
    for record, (area, ci) in zip(result["per_class"], PUBLISHED_HA, strict=True):
        assert record["estimated_ha"] * 1000 == pytest.approx(area, abs=1)  # the map is 1/1000 of the example
        assert record["estimated_ha_ci95"] * 1000 == pytest.approx(ci, abs=1)
    table = (tmp_path / "area.csv").read_text().splitlines()
    assert table[0].startswith("id,name,mapped_pixels,sample_points") and len(table) == 5
    assert table[1].startswith("1,deforestation,200,75,69,")


def test_sample_is_stratified_and_reproducible(tmp_path):
    values = np.ones((60, 50), dtype=np.uint8)
    values[:, 40:] = 2  # 600 pixels of class 2, 2400 of class 1
    values[:5, :5] = 3  # 25 pixels of class 3
    hole = np.zeros_like(values, dtype=bool)
    hole[30:40, 10:20] = True  # nodata: never sampled
    path = write_map(tmp_path / "map.tif", values, ["a", "b", "c"], hole)
    sample = draw_sample(path, tmp_path / "s.gpkg", SampleConfig(points=100, min_per_class=20, seed=3))
    # 2275 pixels of a (the hole and c taken out), 600 of b, 25 of c: by area 78.4, 20.7 and 0.9, so c is
    # raised to 20; the other 80 by area give b 16.8, raised to 20 too; a gets the other 60
    expected = [60, 20, 20]
    assert sample.points.tolist() == expected
    frame = gpd.read_file(tmp_path / "s.gpkg", engine="pyogrio")
    assert len(frame) == 100 and frame["reference"].isna().all()
    with rasterio.open(path) as ds:
        rows, cols = rasterio.transform.rowcol(ds.transform, frame.geometry.x, frame.geometry.y)
    rows, cols = np.asarray(rows), np.asarray(cols)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 100  # distinct pixels
    assert (values[rows, cols] == frame["map_id"].to_numpy()).all() and not hole[rows, cols].any()
    assert np.bincount(frame["map_id"], minlength=4)[1:].tolist() == expected
    again = draw_sample(path, tmp_path / "t.geojson", SampleConfig(points=100, min_per_class=20, seed=3))
    assert again.points.tolist() == expected
    assert gpd.read_file(tmp_path / "t.geojson").geometry.equals(frame.geometry)


def test_drawn_sample_labelled_gives_the_map_accuracy(tmp_path):
    """A sample labelled with the map's own classes: user's and overall accuracy 1, areas as mapped."""
    values = np.repeat(np.arange(1, 4, dtype=np.uint8), [1200, 600, 200]).reshape(40, 50)
    path = write_map(tmp_path / "map.tif", values, ["a", "b", "c"])
    assert main(["--quiet", "sample", path, "-o", str(tmp_path / "s.gpkg"), "--points", "60",
                 "--min-per-class", "15"]) == 0
    frame = gpd.read_file(tmp_path / "s.gpkg", engine="pyogrio")
    frame["reference"] = frame["map_id"]
    frame.to_file(tmp_path / "s.gpkg", engine="pyogrio")
    result = estimate_area(path, tmp_path / "s.gpkg")
    assert result.estimates.overall == pytest.approx(1.0)
    assert [r["estimated_pixels"] for r in result.per_class()] == pytest.approx([1200, 600, 200])


def _refused(capsys, argv: list[str]) -> str:
    """Run the CLI, check that it refuses (exit status 2, one line on stderr) and return that line."""
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("cssd-geo: error: ")
    return err


def test_area_and_sample_refusals(tmp_path, small_scene, capsys):
    path, _ = example_map(tmp_path)
    _, polygons, _ = small_scene
    assert "needs reference points (a stratified sample of the map, e.g. from 'cssd-geo sample'), not Polygon; " \
        "compare polygons with 'cssd-geo evaluate'" in _refused(capsys, ["area", path, "--labels", polygons,
                                                                           "--class-field", "class_id"])
    frame = gpd.GeoDataFrame({"reference": [1, 1]}, geometry=gpd.points_from_xy(
        [ORIGIN[0] + 15, ORIGIN[0] + 45], [ORIGIN[1] - 15, ORIGIN[1] - 15]), crs=CRS)
    frame.to_file(tmp_path / "few.gpkg", engine="pyogrio")
    assert "no reference point falls on the mapped class(es) forest gain, stable forest, stable non-forest; " \
        "every mapped class needs points" in _refused(capsys, ["area", path, "--labels", str(tmp_path / "few.gpkg")])
    assert "points are written as GeoPackage or GeoJSON; give a name ending in .gpkg or .geojson" in \
        _refused(capsys, ["sample", path, "-o", str(tmp_path / "s.shp")])
    assert not (tmp_path / "s.shp").exists()
    assert "--points 0: draw at least 1 point" in _refused(capsys, ["sample", path, "-o", str(tmp_path / "s.gpkg"),
                                                                     "--points", "0"])
    with pytest.raises(CssdError, match="no field 'reference'"):
        estimate_area(path, polygons, AreaConfig())
