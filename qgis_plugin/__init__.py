"""CSSD in the QGIS Processing toolbox: train, predict and evaluate with cssd-geo.

QGIS calls :func:`classFactory` when it loads the plugin."""


def classFactory(iface):  # noqa: N802 (the name QGIS looks for)
    """The plugin object QGIS asks for."""
    from .plugin import CssdPlugin

    return CssdPlugin(iface)
