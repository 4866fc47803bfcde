"""The registry of model kinds: `dermstack kinds`, dispatch by kind (the docs' listing: tests/test_docs.py)."""
import re

from click.testing import CliRunner

from dermstack.catalogue import param_rows
from dermstack.cli import cli
from dermstack.config import RunConfig
from dermstack.errors import ConfigError
from dermstack.registry import ensemble_methods, method_names, model_kinds


def test_kinds_command_lists_every_kind_method_and_param():
    out = CliRunner().invoke(cli, ["kinds"])
    assert out.exit_code == 0, out.output
    for kind in model_kinds().values():
        assert f"{kind.name}: {kind.description}" in out.output
        for name, _, default in param_rows(kind.params):
            assert f"{name} (" in out.output and default in out.output
    for m in method_names():
        assert re.search(rf"^  {m}: ", out.output, re.M)


def test_each_kind_owns_a_strict_params_schema():
    for kind in model_kinds().values():
        assert kind.params.__pydantic_config__.get("extra") == "forbid", kind.name
        try:
            RunConfig.from_dict({"models": [{"kind": kind.name, "params": {"no_such_param_x": 1}}]})
        except ConfigError as e:
            assert "no_such_param_x" in str(e)
        else:
            raise AssertionError(f"{kind.name} accepted an unknown param")
    assert {"mean", "greedy", "stack", "rank", "calibrated"} <= set(ensemble_methods())
