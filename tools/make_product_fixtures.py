"""Write the small sensor products the tests use (EnMAP L2A, PRISMA L2D, EMIT L2A) into a folder.

Usage: python tools/make_product_fixtures.py OUT_FOLDER

The tests write them on the fly into a temporary folder; this writes the same files to look at
or to open in another tool. Each product follows the layout its module in tests/product_fixtures/
cites; pixel values come from examples/indian_pines.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.product_fixtures import emit, enmap, prisma  # noqa: E402 (after the path is set)


def main() -> None:
    """Write every product fixture into the folder given on the command line."""
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for module in (enmap, prisma, emit):
        folder = out / module.__name__.rsplit(".", 1)[-1]
        folder.mkdir(exist_ok=True)
        print(f"{module.__name__.rsplit('.', 1)[-1]}: {module.write(folder)}")


if __name__ == "__main__":
    main()
