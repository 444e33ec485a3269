"""The chunked engine: chunk-size invariance, cluster runs, output formats, interruption."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

import cssd_geo
from cssd_geo.config import PredictConfig, TrainConfig
from cssd_geo.model import ModelConfig
from tests.conftest import CRS, make_cube, write_scene, write_stripe_labels


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 300 x 280 x 8 scene with nodata pixels and a model file for it."""
    folder = tmp_path_factory.mktemp("engine")
    cube = make_cube(300, 280, 8, seed=5)
    cube[:, 10:14, 200:203] = -99
    cube[3, 150, 150] = -99  # one band is enough to make a pixel nodata
    scene = write_scene(folder / "scene.tif", cube, nodata=-99)
    labels = write_stripe_labels(folder / "labels.gpkg", 300, 280)
    path = folder / "model.cssd"
    cssd_geo.train(scene, labels, path, TrainConfig(shots=6, epochs=10, device="cpu", model=ModelConfig(patch=5)))
    return folder, scene, str(path), cube


def _map(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_map_does_not_depend_on_chunk_size(big):
    folder, scene, model, cube = big
    maps = {}
    for chunk in (64, 100, 257, 300):
        out = folder / f"map_{chunk}.tif"
        cssd_geo.predict(model, scene, out, PredictConfig(chunk=chunk, device="cpu", probabilities=True,
                                                          overwrite=True))
        maps[chunk] = (_map(out), _map(folder / f"map_{chunk}_probabilities.tif"))
    reference, probabilities = maps[300]
    assert len(np.unique(reference)) >= 3  # a real map, not a constant
    for chunk, (m, p) in maps.items():
        assert np.array_equal(m, reference), f"chunk {chunk} differs in {(m != reference).sum()} pixels"
        assert np.array_equal(p, probabilities), chunk
    assert (reference[10:14, 200:203] == 0).all() and reference[150, 150] == 0
    assert np.array_equal(reference == 0, (cube == -99).any(axis=0))


def test_cluster_run_matches_local_run(big):
    """The map of a cluster run equals the local one; the model reaches the workers as the
    file's bytes (not its path), each worker loads it once, on the device it resolves itself."""
    import hashlib

    from distributed import Client, LocalCluster

    from cssd_geo import blocks

    folder, scene, model, cube = big
    local = folder / "local.tif"
    cssd_geo.predict(model, scene, local, PredictConfig(chunk=128, device="cpu", overwrite=True))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        remote = folder / "cluster.tif"
        cssd_geo.predict(model, scene, remote, PredictConfig(chunk=128, scheduler=cluster.scheduler_address,
                                                             overwrite=True))
        loaded = client.run(lambda: sorted((k, str(d)) for k, (_, d) in blocks._WORKER_MODELS.items()))
    digest = hashlib.sha256(open(model, "rb").read()).hexdigest()
    used = [v for v in loaded.values() if v]
    assert used and all(v == [((digest, "auto"), "cpu")] for v in used)  # once per worker, by content
    assert np.array_equal(_map(local), _map(remote))


def test_a_worker_killed_mid_run_costs_time_not_the_map(big):
    """SIGKILL one of two worker processes after a few blocks: the scheduler runs its blocks
    again elsewhere and the map equals the local one."""
    from distributed import Client, LocalCluster

    folder, scene, model, cube = big
    local = folder / "local32.tif"
    cssd_geo.predict(model, scene, local, PredictConfig(chunk=32, device="cpu", overwrite=True))

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:

        class KillAWorker(cssd_geo.Progress):
            def __init__(self) -> None:
                self.done, self.killed = 0, None

            def advance(self, steps: int = 1, note: str = "") -> None:
                self.done += steps
                if self.done == 3:
                    address, pid = sorted(client.run(os.getpid).items())[0]
                    os.kill(pid, signal.SIGKILL)
                    self.killed = address

        progress = KillAWorker()
        remote = folder / "survived.tif"
        cssd_geo.predict(model, scene, remote, PredictConfig(chunk=32, scheduler=cluster.scheduler_address,
                                                             overwrite=True), progress)
    assert progress.killed is not None and progress.done == 10 * 9  # 300 x 280 px in 32 px blocks
    assert np.array_equal(_map(local), _map(remote))


def test_zarr_and_cog_outputs(big):
    import xarray as xr

    folder, scene, model, cube = big
    tif = folder / "cog.tif"
    cssd_geo.predict(model, scene, tif, PredictConfig(chunk=128, cog=True, confidence=True, overwrite=True))
    with rasterio.open(tif) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.colormap(1)[1][3] == 255 and ds.tags()["CSSD_CLASSES"]
    with rasterio.open(folder / "cog_confidence.tif") as ds:
        conf = ds.read(1)
        assert ds.scales[0] == pytest.approx(1 / 254)
    valid = conf != 255
    assert (conf[valid] >= 254 // 3).all()  # the top of three probabilities is at least 1/3
    store = folder / "map.zarr"
    cssd_geo.predict(model, scene, store, PredictConfig(chunk=100, probabilities=True, overwrite=True))
    ds = xr.open_zarr(store, decode_coords="all", mask_and_scale=False)
    assert ds.rio.crs.to_string() == CRS
    with rasterio.open(scene) as src:
        assert ds.rio.transform() == src.transform
    assert np.array_equal(ds["classes"].values, _map(tif))  # the COG above, written in other chunks
    assert ds["probabilities"].shape == (3, 300, 280)
    assert not [f for f in os.listdir(folder) if f.startswith(".")], "no temporary files left"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_prediction_leaves_no_file_at_the_output(big, tmp_path, sig):
    folder, scene, model, cube = big
    out = tmp_path / "killed.tif"
    exe = os.path.join(os.path.dirname(sys.executable), "cssd-geo")
    proc = subprocess.Popen([exe, "--quiet", "predict", model, scene, "-o", str(out), "--chunk", "16"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not [f for f in os.listdir(tmp_path) if ".partial-" in f] and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "prediction finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not out.exists()
    leftovers = os.listdir(tmp_path)
    if sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM is handled like Ctrl-C
        assert leftovers == [] and proc.returncode == 128 + sig
        assert "interrupted" in proc.stderr.read()
    else:  # no handler runs on SIGKILL: only a hidden, clearly named partial file may remain
        assert all(f.startswith(".killed.tif.partial-") for f in leftovers)


def _files(path):
    """Every file under ``path`` (a GeoTIFF and its side files, or a Zarr store) with its bytes."""
    root = os.fspath(path)
    if os.path.isfile(root):
        return {os.path.basename(root): open(root, "rb").read()}
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(root) for f in names}


@pytest.mark.parametrize("kind, sig", [("tif", signal.SIGINT), ("tif", signal.SIGKILL), ("zarr", signal.SIGKILL)])
def test_resume_after_an_interruption_gives_the_same_bytes(big, tmp_path, kind, sig):
    """A `predict --resume` stopped by Ctrl-C or kill -9 after a few chunks, then run again:
    it computes only the missing chunks and writes, byte for byte, what an uninterrupted
    --resume run writes (the pixels of a plain run)."""
    import json

    folder, scene, model, cube = big
    exe = os.path.join(os.path.dirname(sys.executable), "cssd-geo")
    args = ["predict", model, scene, "--chunk", "16", "--probabilities", "--resume"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole, out = tmp_path / "whole" / f"m.{kind}", tmp_path / "cut" / f"m.{kind}"
    assert subprocess.run([exe, "--quiet", *args, "-o", str(whole)]).returncode == 0
    state = tmp_path / "cut" / f".m.{kind}.resume"
    proc = subprocess.Popen([exe, "--quiet", *args, "-o", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(state.glob("classes-*.npy"))) < 5 and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "prediction finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    saved = len(list(state.glob("classes-*.npy")))
    assert not out.exists() and 5 <= saved < 19 * 18  # 300 x 280 px in 16 px chunks
    # a chunk is done when every layer of it is saved; a kill can fall between a chunk's class
    # and probability files, on as many chunks as were in flight
    complete = sum((state / f.name.replace("classes-", "probabilities-")).exists()
                   for f in state.glob("classes-*.npy"))
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to continue" in proc.stderr.read()
    again = subprocess.run([exe, "--json-progress", *args, "-o", str(out)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    events = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
    resumed = next(e["message"] for e in events if "resuming" in e.get("message", ""))
    assert resumed.startswith("resuming: ") and int(resumed.split()[1]) == complete
    assert _files(out) == _files(whole)
    if kind == "tif":
        for side in ("m_probabilities.tif", "m.qml"):
            assert _files(tmp_path / "cut" / side) == _files(tmp_path / "whole" / side)
        plain = tmp_path / "plain.tif"
        cssd_geo.predict(model, scene, plain, PredictConfig(chunk=64, device="cpu"))
        assert np.array_equal(_map(plain), _map(out))
    assert not state.exists() and not (tmp_path / "whole" / f".m.{kind}.resume").exists()
