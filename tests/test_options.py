"""Options are declared once: a config field's ``option(...)`` metadata makes its CLI flag, its help, its
range check and the flag named in errors; nothing else lists them."""

from dataclasses import dataclass
from typing import Literal, Optional

import click
import pytest
from click.testing import CliRunner

from dcwp_prune.options import ConfigError, Options, check_ranges, flag_of, option, option_specs
from dcwp_prune.run import cli
from dcwp_prune.run.config import PATHS, PruneConfig, RunConfig, expand_paths


@dataclass(frozen=True)
class Widget(Options):
    """A stage config as a contributor would add one: each field is one declaration."""

    count: int = option(3, flag="--widget-count", ge=1, help="How many widgets.", show_default=True)
    mode: Literal["fast", "slow"] = option("fast", flag="--widget-mode", help="Widget mode.")
    scale: Optional[float] = option(None, flag="--widget-scale", gt=0, lt=1, means="a fraction", help="Scale.")
    place: Optional[str] = option(None, flag="--widget-place", path="folder", help="Where.")
    loud: bool = option(False, flag="--loud/--quiet", help="Noise.")
    hidden: float = option(0.5, ge=0)  # config file only


def test_a_new_field_is_a_flag_a_range_and_a_message():
    seen = {}

    @click.command()
    @cli._config_options(Widget)
    def command(**params):
        seen.update(params)

    runner = CliRunner()
    result = runner.invoke(command, ["--widget-count", "5", "--widget-mode", "slow", "--widget-scale", "0.5", "--loud"])
    assert result.exit_code == 0, result.output
    assert seen == {"widget_count": 5, "widget_mode": "slow", "widget_scale": 0.5, "widget_place": None, "loud": True}
    assert "is not one of 'fast', 'slow'" in runner.invoke(command, ["--widget-mode", "medium"]).output
    help_text = runner.invoke(command, ["--help"]).output
    assert "How many widgets.  [default: 3]" in help_text and "--loud / --quiet" in help_text
    assert "--hidden" not in help_text  # no flag declared: config file only
    with pytest.raises(ConfigError, match=r"^count must be >= 1, got 0 \(--widget-count\)$"):
        check_ranges(Widget(count=0))
    with pytest.raises(ConfigError, match=r"^scale must be in \(0, 1\) \(a fraction\), got 1 \(--widget-scale\)$"):
        check_ranges(Widget(scale=1.0))
    with pytest.raises(ConfigError, match=r"^hidden must be >= 0, got -1$"):
        check_ranges(Widget(hidden=-1.0))
    check_ranges(Widget(scale=None))  # unset values are never checked
    assert flag_of(Widget, "loud") == " (--loud)" and flag_of(Widget, "hidden") == ""


def test_the_run_command_is_generated_from_the_config():
    """Every field with a flag is an option of ``run`` mapped to its dotted key; every other option of ``run`` is
    one of the four that are not config values."""
    flagged = {s.key: s for s in option_specs(RunConfig) if s.flag}
    assert {s.key for s in cli._RUN_MAP.values()} == set(flagged) and len(flagged) >= 35
    params = {p.name for p in cli.run_command.params if isinstance(p, click.Option)}
    assert params - set(cli._RUN_MAP) == {"config", "data_option", "force_config", "imports"}
    assert set(cli._RUN_MAP) <= params
    # prune shares PruneConfig's flags (all but the random-mask control, which needs a run)
    prune_params = {p.name for p in cli.prune_command.params}
    rule = {cli._param_name(s) for s in option_specs(PruneConfig) if s.flag and s.key != "shuffle"}
    assert rule <= prune_params and "shuffle_mask" not in prune_params


def test_every_range_of_the_old_table_is_declared():
    """The ranges a hand-written table used to hold, now on the fields (a sample of each kind)."""
    specs = {s.key: s for s in option_specs(RunConfig)}
    assert specs["seed"].range_text() == ">= 0" and specs["data.batch_size"].range_text() == "> 0"
    assert specs["mining.tau"].range_text() == "in (0, 1)" and specs["biased.q"].range_text() == "in (0, 1]"
    assert specs["prune.pruning_ratio"].range_text() == "in (0, 1)" and specs["prune.target_macs"].range_text() == "> 1"
    assert specs["finetune.rewind_point"].range_text() == "in [0, 1]"
    assert specs["data.ratio"].range_text() == "in [0, 100]"
    assert sum(s.ranged for s in specs.values()) >= 40


def test_paths_are_declared_once_and_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert PATHS == {
        "model_file": "file",
        "stage1_from": "folder",
        "data.root": "folder",
        "data.mnist_root": "folder",
        "out": "folder",
    }
    config = RunConfig.from_dict(
        {"out": "~/o", "model_file": "~/f.pt", "stage1_from": "~/s", "data": {"root": "~/d", "mnist_root": "~/m"}}
    )
    done = expand_paths(config)
    assert (done.out, done.model_file, done.stage1_from) == tuple(str(tmp_path / n) for n in ("o", "f.pt", "s"))
    assert (done.data.root, done.data.mnist_root) == (str(tmp_path / "d"), str(tmp_path / "m"))
