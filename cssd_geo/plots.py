"""Figures written next to results: the training curve and the confusion matrix (PNG,
matplotlib without a display)."""
from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .classes import ClassInfo
from .errors import writing
from .outputs import OutputSet, output_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str, outputs: OutputSet | None) -> None:
    """Save as PNG through a temporary file (never a half-written PNG), published at once or
    with ``outputs``; then close the figure."""
    try:
        with writing(path), output_file(path, outputs, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        _figure().close(fig)


def training_curve(history: Sequence[dict[str, Any]], path: str, title: str = "",
                   outputs: OutputSet | None = None) -> None:
    """Loss per epoch, and validation overall accuracy when the history has it."""
    plt = _figure()
    fig, loss_ax = plt.subplots(figsize=(6.4, 3.6))
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    scored = [h for h in history if h.get("val_oa") is not None]  # validation runs on some epochs only
    if scored:
        acc_ax = loss_ax.twinx()
        acc_ax.plot([h["epoch"] for h in scored], [100 * h["val_oa"] for h in scored], color="tab:orange",
                    marker="o", markersize=3, label="validation OA")
        acc_ax.set_ylabel("validation OA (%)", color="tab:orange")
        acc_ax.set_ylim(0, 100)
    loss_ax.set_title(title or "training")
    _save(fig, path, outputs)


def confusion_matrix(matrix: Sequence[Sequence[int]], names: Sequence[str], path: str, title: str = "",
                     outputs: OutputSet | None = None) -> None:
    """Row-normalised confusion matrix (reference rows, map columns) with the counts."""
    import numpy as np

    plt = _figure()
    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("map")
    ax.set_ylabel("reference")
    for i in range(len(names)):
        for j in range(len(names)):
            if counts[i, j]:
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the reference class")
    ax.set_title(title or "confusion matrix")
    _save(fig, path, outputs)


def class_maps(maps: Sequence[Any], titles: Sequence[str], classes: Sequence[ClassInfo], path: str,
               outputs: OutputSet | None = None) -> None:
    """Class-id rasters side by side (e.g. the reference and a prediction) in the classes'
    colours, 0 shown white, with a legend."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _figure()
    top = max(max(c.id for c in classes), 1)
    colours = np.ones((top + 1, 3))
    for c in classes:
        colours[c.id] = np.asarray(c.color) / 255
    fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps) + 2.4, 3.8))
    for ax, image, title in zip(np.atleast_1d(axes), maps, titles, strict=True):
        ax.imshow(np.asarray(image), cmap=ListedColormap(colours), vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=colours[c.id], label=c.name) for c in classes], loc="center right", fontsize=7,
               frameon=False)
    fig.subplots_adjust(right=0.78)
    _save(fig, path, outputs)
