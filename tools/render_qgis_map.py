"""Render a class map written by cssd-geo to a PNG, headless, the way QGIS shows it.

It uses the paletted style from the map's .qml, with a legend. Used for the README's QGIS picture:

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python tools/render_qgis_map.py MAP.tif OUT.png
"""
from __future__ import annotations

import os
import sys
import tempfile


def render(map_path: str, out_png: str, scale: int = 3) -> None:
    """Draw ``map_path`` with QGIS's renderer at ``scale`` screen pixels per map pixel, and
    its legend (class colours and names) to the right."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    runtime = tempfile.mkdtemp(prefix="xdg-")
    os.chmod(runtime, 0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", runtime)
    from qgis.core import QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsRasterLayer
    from qgis.PyQt.QtCore import QRect, QSize, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    layer = QgsRasterLayer(map_path, "map")
    if not layer.isValid():
        raise SystemExit(f"{map_path}: QGIS cannot open it")
    classes = layer.renderer().classes()
    width, height = layer.width() * scale, layer.height() * scale
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    row, pad, legend_width = 22, 12, 230
    image = QImage(width + legend_width + 2 * pad, max(height, row * len(classes)) + 2 * pad, QImage.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.drawImage(pad, pad, job.renderedImage())
    painter.setFont(QFont("DejaVu Sans", 9))
    for i, entry in enumerate(classes):
        y = pad + i * row
        painter.fillRect(QRect(width + 2 * pad, y + 3, 16, 16), entry.color)
        painter.drawText(QRect(width + 2 * pad + 22, y, legend_width - 22, row), Qt.AlignVCenter, entry.label)
    painter.end()
    image.save(out_png)
    del layer


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    render(sys.argv[1], sys.argv[2])
    print(f"written {sys.argv[2]}")
