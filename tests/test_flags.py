"""The one table of command-line flags (cssd_geo.flags): the CLI declares every config field's
option under it, and the QGIS plugin's executable backend writes command lines with it, so every
option reaches the same config in-process and through the executable."""
from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from cssd_geo import cli, config, flags

STEPS = [("train", config.TrainConfig, ["s.tif", "--labels", "l.shp", "-o", "m.cssd"]),
         ("predict", config.PredictConfig, ["m.cssd", "s.tif", "-o", "x.tif"]),
         ("map", config.MapConfig, ["s.tif", "--labels", "l.shp", "-o", "x.tif"]),
         ("suggest", config.SuggestConfig, ["m.cssd", "s.tif", "-o", "x.gpkg"]),
         ("evaluate", config.EvaluateConfig, ["x.tif", "--labels", "l.shp"]),
         ("sample", config.SampleConfig, ["x.tif", "-o", "s.gpkg"]),
         ("area", config.AreaConfig, ["x.tif", "--labels", "s.gpkg"])]


def _other(value: typing.Any, hint: typing.Any) -> typing.Any:
    """A value of type ``hint`` that differs from the default ``value`` (and that the parser accepts)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return next(choice for choice in args if choice != value)
    if hint is bool:
        return not value
    kind = args[0] if args else hint
    if kind is int:
        return 3 if value is None else value + 2  # odd stays odd (patch, se_size)
    if kind is float:
        return 0.25 if value is None else value / 2
    return "cuda:1" if value == "auto" else f"not-{value}"


def _non_defaults(kind: type) -> dict[str, typing.Any]:
    """Every option of config ``kind`` (nested configs' options included) at a value other than its default."""
    out: dict[str, typing.Any] = {}
    hints, instance = typing.get_type_hints(kind), kind()
    for f in dataclasses.fields(kind):
        nested = config._nested(kind, f.name)
        out.update(_non_defaults(nested) if nested is not None else
                   {f.name: _other(getattr(instance, f.name), hints[f.name])})
    assert sorted(out) == sorted(config.option_names(kind))
    return out


def _stored(settings: typing.Any, name: str) -> typing.Any:
    """Option ``name`` of a config, found in its nested configs too."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == name:
            return value
        if dataclasses.is_dataclass(value) and name in config.option_names(type(value)):
            return _stored(value, name)
    raise KeyError(name)


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = cli._parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


@pytest.mark.parametrize("command,kind,positional", STEPS)
def test_every_option_is_declared_under_its_flag(command, kind, positional):
    declared = {a.dest: a.option_strings for a in _subparser(command)._actions}
    for name in config.option_names(kind):
        assert declared[name] == [flags.flag(name)], name


@pytest.mark.parametrize("command,kind,positional", STEPS)
def test_every_option_round_trips_through_both_backends(command, kind, positional):
    options = _non_defaults(kind)
    in_process = config.from_options(kind, options)  # what the plugin's in-QGIS backend builds
    argv = [command, *positional, *flags.arguments(options)]  # what its executable backend runs
    through_cli = cli._config(kind, cli._parser().parse_args(argv))
    assert through_cli == in_process
    for name, value in options.items():
        assert _stored(in_process, name) == value, name
    # and the defaults give no flag at all, and the defaults back
    defaults = {name: _stored(kind(), name) for name in config.option_names(kind)}
    assert cli._config(kind, cli._parser().parse_args([command, *positional])) == kind()
    assert not [a for a in flags.arguments({k: v for k, v in defaults.items() if isinstance(v, bool)})]


def test_flags_of_the_exceptions():
    assert flags.arguments({"learning_rate": 0.01, "auxiliary": False, "product_masks": True,
                            "plot_path": "c.png", "json_path": "m.json", "epochs": None, "tta": True,
                            "csv_path": "a.csv"}) == \
        ["--lr", "0.01", "--no-auxiliary", "--plot", "c.png", "--json", "m.json", "--tta", "--csv", "a.csv"]
