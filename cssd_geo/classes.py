"""The class table: id (the value stored in maps), name and display colour of each class."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

# A qualitative palette of 20 well-separated colours; classes beyond it cycle.
_PALETTE = (
    "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f",
    "bcbd22", "17becf", "aec7e8", "ffbb78", "98df8a", "ff9896", "c5b0d5", "c49c94",
    "f7b6d2", "c7c7c7", "dbdb8d", "9edae5",
)


def default_color(index: int) -> tuple[int, int, int]:
    """The display colour of the ``index``-th class (0-based)."""
    h = _PALETTE[index % len(_PALETTE)]
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class ClassInfo:
    """One class. Fields read as attributes or as keys (``c.id`` or ``c["id"]``)."""

    id: int
    name: str
    color: tuple[int, int, int]

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)


def make_class_table(ids: Sequence[int], names: Sequence[str]) -> list[ClassInfo]:
    """Class table in logit order (sorted by id) with default colours."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    return [ClassInfo(int(ids[i]), str(names[i]), default_color(k)) for k, i in enumerate(order)]


def classes_to_json(classes: Sequence[ClassInfo]) -> str:
    """Serialise a class table (the model file and the map's tags use this)."""
    return json.dumps([{"id": c.id, "name": c.name, "color": list(c.color)} for c in classes])


def classes_from_json(text: str) -> list[ClassInfo]:
    """Parse what :func:`classes_to_json` wrote."""
    table = []
    for d in json.loads(text):
        red, green, blue = (int(v) for v in d["color"])
        table.append(ClassInfo(int(d["id"]), str(d["name"]), (red, green, blue)))
    return table
