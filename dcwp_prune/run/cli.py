"""The ``dcwp-prune`` command line: options become a :class:`RunConfig`, nothing more.

``dcwp-prune MODEL --data NAME`` runs the whole pipeline; subcommands serve the plugin use.
This is the only module that imports click.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import typing
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

import click

from ..data.cmnist import DIGIT_SOURCES
from ..errors import DCWPError, InputError
from ..options import OptionSpec, choices, option_specs
from ..version import __version__
from .commands import (
    data_option,
    echo_warnings,
    evaluate_run,
    fmt,
    import_modules,
    prune_files,
    read_toml,
    registered_names,
    report_and_summary,
    run_config,
    run_locked,
    write_cmnist_folders,
)
from .config import PruneConfig, RunConfig

EXAMPLES = """\b
Examples:
  dcwp-prune mlp --data cmnist --quick                  # offline demo, about 40 s on 2 CPU cores
  dcwp-prune cnn --data cmnist --ratio 0.5 --out runs/cnn-0.5
  dcwp-prune resnet18 --data bffhq --data-root ~/data --device cuda
  dcwp-prune resnet18 --data cifar10c --data-root ~/data --ratio 1 --structured --pruning-ratio 0.5
  dcwp-prune resnet18 --data bffhq --config my.toml --variant clean
  dcwp-prune make-cmnist --out ~/data --ratio 0.5 --ratio 1
  dcwp-prune prune --model-file run/f_d.safetensors --arch resnet18 --scores run/scores.safetensors --out pruned/
  dcwp-prune evaluate runs/cnn-0.5
  dcwp-prune report runs/cnn-0.5
"""

# user errors: one message on stderr, exit status 2, no traceback. DCWPError covers ConfigError,
# RunFolderError, DatasetError, UnsupportedModelError, the file readers' errors and every other refusal
# of the package; the OSError subclasses are the ones a bad path raises. Anything else is a bug: its
# traceback, exit status 1 and how to report it (_DefaultGroup.invoke).
_USER_ERRORS = (DCWPError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
_BUG = (
    "an unexpected error (a bug, not a wrong option; the traceback is above). If it comes from dcwp-prune, please "
    "report it with the command line, `dcwp-prune --version` and this traceback"
)


def _fail(err: BaseException) -> "click.ClickException":
    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    exc = click.ClickException(str(msg))
    exc.exit_code = 2
    return exc


class _DefaultGroup(click.Group):
    """``dcwp-prune MODEL ...`` runs the pipeline; a known subcommand name selects that subcommand."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise  # (KeyboardInterrupt is no Exception: it passes through as well)
        except Exception:  # a bug: never shown as a user error
            import traceback

            traceback.print_exc()
            click.echo(f"Error: {_BUG}", err=True)
            sys.exit(1)


def _import_modules(ctx: click.Context, param: click.Parameter, names: Tuple[str, ...]) -> None:
    """``--import MODULE``: the user's modules imported first (:func:`~.commands.import_modules`)."""
    try:
        import_modules(names)
    except InputError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


#: ``--import MODULE`` of every command that builds a model or a dataset by name.
_import_option = click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    is_eager=True,
    expose_value=False,
    callback=_import_modules,
    help="Import MODULE first (repeatable): a module of yours that registers models or datasets "
    "(dcwp_prune.register_model / register_dataset).",
)


def _list(kind: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo("\n".join(registered_names(kind)))
            ctx.exit(0)

    return callback


@click.group(cls=_DefaultGroup, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dcwp-prune")
@click.option(
    "--list-models",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list("models"),
    help="Print every model name and exit.",
)
@click.option(
    "--list-datasets",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list("datasets"),
    help="Print every dataset name and exit.",
)
def main() -> None:
    """DCWP: debias and prune a classifier (Park et al., CVPR 2023).

    dcwp-prune MODEL --data NAME [options] runs the five stages (biased model, bias-conflicting
    mining, mask learning, fine-tuning, evaluation) and writes a run folder with a report.
    """


# ---------------------------------------------------------------------------------- run
def _param_name(spec: OptionSpec) -> str:
    """The click parameter of an option: its (first) flag, ``--data-root`` -> ``data_root``."""
    return spec.flag.split("/")[0].lstrip("-").replace("-", "_")  # type: ignore[union-attr]


def _click_option(spec: OptionSpec) -> Callable[..., Any]:
    """The click option of a config field declared with ``option(flag=...)``: its type, choices and help."""
    tp = spec.type
    if typing.get_origin(tp) is Union:  # Optional[X]: the flag takes X (unset means None)
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    kwargs: Dict[str, Any] = {"help": spec.help}
    if spec.show_default:  # shown as click shows it; the value itself is applied by the config, not by click
        kwargs.update(default=spec.default, show_default=True)
    if tp is bool:
        kwargs["default"] = spec.default
        if "/" not in spec.flag:  # type: ignore[operator]
            kwargs["is_flag"] = True  # a --x/--no-x pair is a boolean flag by itself
    elif spec.path:
        kwargs["type"] = click.Path()
    elif typing.get_origin(tp) is Literal:
        kwargs["type"] = click.Choice(choices(tp))
    elif tp in (int, float):
        kwargs["type"] = tp
    return click.option(spec.flag, _param_name(spec), **kwargs)


def _config_options(cls: type, skip: Tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding one click option per field of ``cls`` that declares a flag (``option(flag=...)``),
    in declaration order; the flag, type, choices and help come from the field, so a new option is one field."""
    specs = [s for s in option_specs(cls) if s.flag and s.key not in skip]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for spec in reversed(specs):
            func = _click_option(spec)(func)
        return func

    return decorate


#: CLI parameter -> dotted RunConfig key, for every field with a flag.
_RUN_MAP: Dict[str, OptionSpec] = {_param_name(s): s for s in option_specs(RunConfig) if s.flag}


def _overrides(ctx: click.Context, model: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """Config file values, then every flag the user actually typed (flags win)."""
    out: Dict[str, Any] = read_toml(params["config"]) if params["config"] else {}
    out["model"] = model
    for name, spec in _RUN_MAP.items():
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = params[name]
        if spec.path and value:
            value = os.path.expanduser(value)
        section, _, key = spec.key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[key] = value
    if params["data_option"]:  # on top of the config file's [data.options] (a table: checked when it was read)
        out.setdefault("data", {}).setdefault("options", {}).update(data_option(text) for text in params["data_option"])
    return out


def _section(params: Dict[str, Any], section: str) -> Dict[str, Any]:
    """The values of ``params`` (CLI parameters) that belong to config ``section``, keyed by field, unset ones left
    out (the config's defaults apply)."""
    return {
        spec.key.split(".", 1)[1]: params[name]
        for name, spec in _RUN_MAP.items()
        if spec.key.startswith(section + ".") and name in params and params[name] is not None
    }


#: The pruning-rule options of ``run`` and ``prune``, from PruneConfig's fields: unstructured (``--amount`` /
#: ``--sparsity`` / ``--threshold``, default DCWP's rule) or ``--structured`` channels.
_prune_rule_options = _config_options(PruneConfig, skip=("shuffle",))


@main.command("run", epilog=EXAMPLES)
@click.argument("model")
@_config_options(RunConfig)
@click.option("--config", "config", type=click.Path(), help="TOML file with any option (flags win).")
@click.option(
    "--data-option",
    "data_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the dataset itself, repeatable (csv: --data-option path_col=file --data-option "
    "label_col=y ...; VALUE is read as JSON when it parses). Config file: [data.options].",
)
@click.option(
    "--force-config", is_flag=True, help="With --resume: continue with options that differ from the saved ones."
)
@_import_option
@click.pass_context
def run_command(ctx: click.Context, model: str, **params: Any) -> None:
    """Run DCWP end to end on MODEL and write a run folder with a report."""
    try:
        config = run_config(model, _overrides(ctx, model, params), params)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    _run(config, params["force_config"])


def _run(config: Any, force_config: bool = False) -> None:
    from .lock import run_lock
    from .run_folder import check_writable

    main_rank = int(os.environ.get("RANK", "0")) == 0
    with contextlib.ExitStack() as held:
        try:
            check_writable(config.out)
            held.enter_context(run_lock(config.out, enabled=main_rank))  # through the run and its report
        except _USER_ERRORS as err:
            raise _fail(err) from None
        try:
            run_locked(config, force_config, main_rank)
        except _USER_ERRORS as err:
            raise _fail(err) from None


@main.command("make-cmnist")
@click.option(
    "--out", required=True, type=click.Path(), help="Data root; writes OUT/cmnist/{pct}/... and OUT/cmnist/test."
)
@click.option(
    "--ratio", "ratios", type=float, multiple=True, help="Conflict ratio in percent (repeat; default 0.5 1 2 5)."
)
@click.option("--source", type=click.Choice(DIGIT_SOURCES), default="auto", show_default=True)
@click.option("--mnist-root", type=click.Path(), help="torchvision MNIST folder (for mnist / auto).")
@click.option("--download", is_flag=True, help="Download MNIST into --mnist-root (needs internet).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing ratio folders.")
def make_cmnist(
    out: str, ratios: tuple, source: str, mnist_root: Optional[str], download: bool, seed: int, overwrite: bool
) -> None:
    """Write Colored MNIST in the DisEnt layout (byte-identical for the same seed and source)."""
    try:
        lines = write_cmnist_folders(os.path.expanduser(out), ratios, source, mnist_root, download, seed, overwrite)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    click.echo("\n".join(lines))


@main.command("prune")
@click.option(
    "--model-file", required=True, type=click.Path(), help="State dict (.pt/.pth with weights_only, or .safetensors)."
)
@click.option("--arch", required=True, help="Model name the state dict belongs to (see --list-models).")
@click.option("--scores", required=True, type=click.Path(), help="Mask-scores .safetensors written by a run.")
@click.option("--num-classes", type=int, help="Default: read from the classifier in the model file.")
@_prune_rule_options
@click.option("--input-size", type=int, help="Input resolution for tracing (default 28 for cnn/mlp, else 224).")
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--overwrite", is_flag=True)
@_import_option
def prune_command(**params: Any) -> None:
    """Apply saved DCWP scores to a saved model: no training."""
    fixed = ("model_file", "arch", "scores", "num_classes", "input_size", "out", "overwrite")
    try:
        prune_files(**{k: params[k] for k in fixed}, rule_options=_section(params, "prune"))
    except _USER_ERRORS as err:
        raise _fail(err) from None


@main.command("evaluate")
@click.argument("run_dir", type=click.Path())
@click.option("--device", default="auto", show_default=True)
@_import_option
def evaluate_command(run_dir: str, device: str) -> None:
    """Re-evaluate the saved model of RUN_DIR on its valid and test splits."""
    from .lock import run_lock

    try:
        with run_lock(run_dir, required=False), echo_warnings():
            metrics, skipped = evaluate_run(run_dir, device)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    for split in ("valid", "test"):
        m = metrics[split]
        click.echo(
            f"{split:>5}: accuracy {fmt(m['accuracy'])}, unbiased {fmt(m['unbiased'])}, "
            f"aligned {fmt(m['aligned'])}, conflicting {fmt(m['conflicting'])}, worst group {fmt(m['worst_group'])}"
        )
    if skipped:
        click.echo(f"note: evaluation.json was not written ({skipped}); the figures above are complete", err=True)


@main.command("report")
@click.argument("run_dir", type=click.Path())
@_import_option
def report_command(run_dir: str) -> None:
    """Rebuild report.json, report.md and the plots of RUN_DIR and print the summary."""
    from .lock import run_lock

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(run_lock(run_dir, required=False))
        except _USER_ERRORS as err:
            raise _fail(err) from None
        try:
            report_and_summary(run_dir, rebuild=f"dcwp-prune report {shlex.quote(run_dir)}")
        except _USER_ERRORS as err:
            raise _fail(err) from None


if __name__ == "__main__":
    main()
