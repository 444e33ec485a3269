"""Speed of the prediction engine, measured in one run (python benchmarks/bench_predict.py).

Prints one table: engine px/s (CPU, and CUDA when available) on a synthetic scene; the same
model's per-window inference (windows cut one by one and batched, the way the paper
evaluates) on a random sample of pixels, the ratio engine / per-window and their label
agreement; matmul FLOP/s on the device and the engine's model-FLOP utilisation; peak RSS of
`cssd-geo predict` on the scene and on one 4x larger; read-only throughput of the file.
Scenes are generated once into --workdir (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

import cssd_geo
from cssd_geo.blocks import BlockJob, default_chunk, predict_block
from cssd_geo.classes import make_class_table
from cssd_geo.config import PredictConfig
from cssd_geo.io.scene import open_scene
from cssd_geo.model import CSSD, save_model
from cssd_geo.sampling import cut_windows

BANDS = 200


def make_scene(path: str, side: int, seed: int = 0) -> None:
    """A side x side x 200 int16 GeoTIFF of smooth random fields plus noise, tiled 512."""
    if os.path.exists(path):
        return
    rng = np.random.default_rng(seed)
    base = rng.normal(2000, 400, (BANDS, 8)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=BANDS, dtype="int16",
                       crs="EPSG:32633", transform=from_origin(380000, 5820000, 30, 30), tiled=True,
                       blockxsize=512, blockysize=512, interleave="pixel") as ds:
        for r in range(0, side, 512):
            for c in range(0, side, 512):
                h, w = min(512, side - r), min(512, side - c)
                field = rng.integers(0, 8, (h // 32 + 1, w // 32 + 1)).repeat(32, 0).repeat(32, 1)[:h, :w]
                block = base[:, field] + rng.normal(0, 80, (BANDS, h, w)).astype(np.float32)
                ds.write(block.astype(np.int16), window=rasterio.windows.Window(c, r, w, h))


def make_model(path: str) -> CSSD:
    """An untrained 16-class model with fixed weights, saved to ``path`` for the engine."""
    torch.manual_seed(0)
    model = CSSD(BANDS, 16, classes=make_class_table(list(range(1, 17)), [f"class {i}" for i in range(1, 17)]))
    model.set_normalisation(np.full(BANDS, 2000.0), np.full(BANDS, 400.0))
    save_model(model.eval(), path, {"band_names": None, "wavelengths": None})
    return model.eval()


def matmul_flops(device: torch.device, n: int = 2048, repeat: int = 5) -> float:
    """The device's float32 matmul throughput (FLOP/s), the roofline the MFU is a fraction of."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(repeat + 1):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times[1:]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_run(model_path: str, scene: str, out: str, device: str) -> tuple[float, np.ndarray]:
    """Seconds for ``cssd_geo.predict`` on the scene, and the map it wrote."""
    t = time.perf_counter()
    cssd_geo.predict(model_path, scene, out, PredictConfig(device=device, overwrite=True))
    seconds = time.perf_counter() - t
    with rasterio.open(out) as ds:
        return seconds, ds.read(1)


def per_window(model: CSSD, scene: str, rows, cols, device: torch.device, batch: int = 64):
    """Seconds and labels for classifying the pixels one 'patch' window each, the naive way."""
    da = open_scene(scene)
    windows = cut_windows(da, rows, cols, model.window)
    model = model.to(device)
    labels = []
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = torch.from_numpy(windows[i:i + batch]).to(device)
            labels.append(model(x).argmax(1).cpu().numpy())
    _sync(device)
    seconds = time.perf_counter() - t
    ids = np.array([c.id for c in model.classes])[np.concatenate(labels)]
    return len(rows) / seconds, ids


def compute_only(model: CSSD, device: torch.device, chunk: int) -> float:
    """px/s of the model on chunks already in memory (no reading, no writing)."""
    h = model.reach
    rng = np.random.default_rng(1)
    block = rng.normal(2000, 400, (BANDS, chunk + 2 * h, chunk + 2 * h)).astype(np.float32)
    job = BlockJob(model.to(device), str(device), "fp32", None, ("classes",), tuple(range(1, 17)), 0)
    predict_block(block, job)
    t = time.perf_counter()
    for _ in range(2):
        predict_block(block, job)
    _sync(device)
    # the engine runs one chunk per core side by side with one torch thread each
    return 2 * chunk * chunk / (time.perf_counter() - t)


def read_only(scene: str) -> float:
    """Pixels per second for reading the scene and nothing else."""
    da = open_scene(scene)
    t = time.perf_counter()
    da.data.map_blocks(lambda b: np.zeros((1, 1, 1)), chunks=(1, 1, 1)).compute()
    return da.sizes["y"] * da.sizes["x"] / (time.perf_counter() - t)


def peak_rss(model_path: str, scene: str, out: str) -> tuple[float, float]:
    """Peak resident memory (GiB) and seconds of `cssd-geo predict` in a fresh process.

    Read from the child's own VmHWM: its getrusage maxrss would include this process's
    memory, which a forked child inherits before it starts the new program."""
    code = ("import sys, time; from cssd_geo.cli import main; t = time.perf_counter(); "
            f"rc = main(['--quiet', 'predict', {model_path!r}, {scene!r}, '-o', {out!r}, '--overwrite']); "
            "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')); "
            "print(hwm, time.perf_counter() - t); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rss_kb, seconds = proc.stdout.split()[-2:]
    return int(rss_kb) / 2 ** 20, float(seconds)


def main() -> None:
    """Make the scenes and model once, then time each way of predicting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048, help="scene side in pixels (default 2048)")
    parser.add_argument("--samples", type=int, default=512, help="pixels for the per-window comparison")
    parser.add_argument("--no-large", action="store_true", help="skip the 4x larger scene")
    parser.add_argument("--workdir", help="folder for the generated scenes (kept between runs)")
    parser.add_argument("--json", help="also write the figures as JSON")
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="cssd-bench-")
    os.makedirs(work, exist_ok=True)
    scene = os.path.join(work, f"scene_{args.side}.tif")
    make_scene(scene, args.side)
    model_path = os.path.join(work, "bench.cssd")
    model = make_model(model_path)
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, args.side, args.samples), rng.integers(0, args.side, args.samples)
    pixels = args.side * args.side
    figures: dict = {"scene": f"{args.side} x {args.side} x {BANDS} int16", "cpu_count": os.cpu_count(),
                     "torch": torch.__version__, "flops_per_pixel": model.flops_per_pixel(),
                     "chunk": default_chunk(model)}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        seconds, engine_map = engine_run(model_path, scene, os.path.join(work, f"map_{device.type}.tif"), str(device))
        window_rate, window_ids = per_window(make_model(model_path), scene, rows, cols, device)
        flops = matmul_flops(device)
        rate = pixels / seconds
        figures[device.type] = {
            "engine_px_per_s": rate, "engine_seconds": seconds, "per_window_px_per_s": window_rate,
            "engine_over_per_window": rate / window_rate,
            "label_agreement": float((engine_map[rows, cols] == window_ids).mean()),
            "matmul_flop_per_s": flops, "model_flop_utilisation": rate * model.flops_per_pixel() / flops,
            "compute_only_px_per_s": compute_only(make_model(model_path), device, figures["chunk"]),
        }
    figures["read_only_px_per_s"] = read_only(scene)
    cpu = figures["cpu"]
    figures["end_to_end_over_max_read_compute"] = cpu["engine_seconds"] / max(
        pixels / figures["read_only_px_per_s"], pixels / cpu["compute_only_px_per_s"])
    rss, _ = peak_rss(model_path, scene, os.path.join(work, "rss_small.tif"))
    figures["peak_rss_gib"] = rss
    if not args.no_large:
        large = os.path.join(work, f"scene_{2 * args.side}.tif")
        make_scene(large, 2 * args.side, seed=1)
        rss_large, seconds_large = peak_rss(model_path, large, os.path.join(work, "rss_large.tif"))
        figures["peak_rss_4x_gib"] = rss_large
        figures["rss_4x_over_1x"] = rss_large / rss
        figures["engine_4x_seconds"] = seconds_large
    _print(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


def _print(f: dict) -> None:
    print(f"scene {f['scene']}, default chunk {f['chunk']}, {f['cpu_count']} cores, torch {f['torch']}, "
          f"{f['flops_per_pixel'] / 1e6:.2f} MFLOP per pixel")
    print(f"{'device':<7}{'engine px/s':>13}{'per-window px/s':>17}{'ratio':>8}{'agree':>8}"
          f"{'matmul GFLOP/s':>16}{'MFU':>7}{'compute-only px/s':>19}")
    for name in ("cpu", "cuda"):
        if name in f:
            d = f[name]
            print(f"{name:<7}{d['engine_px_per_s']:>13.0f}{d['per_window_px_per_s']:>17.1f}"
                  f"{d['engine_over_per_window']:>8.0f}{100 * d['label_agreement']:>7.1f}%"
                  f"{d['matmul_flop_per_s'] / 1e9:>16.1f}{100 * d['model_flop_utilisation']:>6.1f}%"
                  f"{d['compute_only_px_per_s']:>19.0f}")
    print(f"read-only {f['read_only_px_per_s']:.0f} px/s; end-to-end / max(read-only, compute-only) "
          f"{f['end_to_end_over_max_read_compute']:.2f}")
    line = f"peak RSS {f['peak_rss_gib']:.2f} GiB"
    if "peak_rss_4x_gib" in f:
        line += f", 4x scene {f['peak_rss_4x_gib']:.2f} GiB (ratio {f['rss_4x_over_1x']:.2f}, " \
                f"{f['engine_4x_seconds']:.0f} s)"
    print(line)


if __name__ == "__main__":
    main()
