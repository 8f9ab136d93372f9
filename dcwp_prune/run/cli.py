"""The ``dcwp-prune`` command line: options become a :class:`RunConfig`, nothing more.

``dcwp-prune MODEL --data NAME`` runs the whole pipeline; subcommands serve the plugin use.
This is the only module that imports click.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import typing
import warnings
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

import click

from ..data.cmnist import DIGIT_SOURCES
from ..errors import DCWPError, InputError, UnknownNameError
from ..options import OptionSpec, choices, option_specs
from ..version import __version__
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
        except (
            click.exceptions.ClickException,
            click.exceptions.Exit,
            click.exceptions.Abort,
            SystemExit,
            KeyboardInterrupt,
        ):
            raise
        except Exception:  # a bug: never shown as a user error
            import traceback

            traceback.print_exc()
            click.echo(f"Error: {_BUG}", err=True)
            sys.exit(1)


def _import_modules(ctx: click.Context, param: click.Parameter, names: Tuple[str, ...]) -> None:
    """``--import MODULE``: import the user's modules first, so that what they register exists (the
    current folder is searched too, as ``python -m`` would)."""
    import importlib

    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise click.BadParameter(
                f"cannot import {name!r} ({err}); pass a module name (mypkg.models, not a file "
                "path) found in the current folder or on PYTHONPATH",
                ctx=ctx,
                param=param,
            ) from None


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
        if not value or ctx.resilient_parsing:
            return
        if kind == "models":
            from ..models import list_models

            click.echo("\n".join(list_models()))
        else:
            from ..data import list_datasets

            click.echo("\n".join(list_datasets()))
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


def _read_toml(path: str) -> Dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    if os.path.isdir(path):
        raise InputError(f"--config {path!r} is a folder; pass the TOML file itself")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    from ..options import ConfigError
    from .config import RunConfig

    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise InputError(f"config file {path!r} is not valid TOML: {err}") from None
        except UnicodeDecodeError as err:
            raise InputError(
                f"config file {path!r} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                f"{err.start}); TOML files are UTF-8: save it as UTF-8"
            ) from None
    try:
        RunConfig.from_dict(data)  # every key and type checked now, against the file's own values
    except ConfigError as err:
        raise ConfigError(f"config file {path!r}: {err}") from None
    return data


def _overrides(ctx: click.Context, model: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """Config file values, then every flag the user actually typed (flags win)."""
    out: Dict[str, Any] = _read_toml(params["config"]) if params["config"] else {}
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
        out.setdefault("data", {}).setdefault("options", {}).update(
            _data_option(text) for text in params["data_option"]
        )
    return out


def _section(params: Dict[str, Any], section: str) -> Dict[str, Any]:
    """The values of ``params`` (CLI parameters) that belong to config ``section``, keyed by field, unset ones left
    out (the config's defaults apply)."""
    return {
        spec.key.split(".", 1)[1]: params[name]
        for name, spec in _RUN_MAP.items()
        if spec.key.startswith(section + ".") and name in params and params[name] is not None
    }


def _data_option(text: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` of ``--data-option``: VALUE read as JSON (numbers, true / false, a {...} table), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--data-option takes KEY=VALUE (e.g. --data-option path_col=file), got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError as err:
        if value.lstrip()[:1] in ("{", "[", '"'):  # meant as JSON: a typo must not pass as a string
            raise InputError(
                f"--data-option {key.strip()}: {value!r} is not valid JSON ({err}); write a table as "
                f'{key.strip()}=\'{{"train": "0", "test": "2"}}\''
            ) from None
        parsed = value
    return key.strip(), parsed


def _default_out(model: str, overrides: Dict[str, Any]) -> str:
    data = overrides.get("data", {})
    name, ratio = data.get("name", "data"), data.get("ratio")
    parts = (
        [model, name] + ([f"{float(ratio):g}pct"] if ratio is not None else []) + [f"seed{overrides.get('seed', 0)}"]
    )
    return os.path.join("runs", "-".join(parts) + ("-quick" if overrides.get("quick") else ""))


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
    from .config import RunConfig
    from .presets import build_config, merge_options
    from .run_folder import read_saved_config

    try:
        overrides = _overrides(ctx, model, params)
        if params["resume"] and params["out"]:
            out = os.path.expanduser(params["out"])
        elif "name" not in overrides.get("data", {}):
            raise InputError("--data is required (e.g. --data cmnist); see --list-datasets")
        elif params["out"] is not None and not params["out"].strip():
            raise InputError("--out is empty; name the run folder (e.g. --out runs/mine) or leave --out out")
        else:
            out = overrides.get("out") or params["out"] or _default_out(model, overrides)
        overrides["out"] = out
        _check_model_name(model)
        if params["resume"]:  # the saved options, with what was typed now on top (differences are refused later)
            config = RunConfig.from_dict(
                merge_options(read_saved_config(out), dict(overrides, resume=True, overwrite=params["overwrite"]))
            )
        else:
            config = build_config(params["preset"], overrides)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    _run(config, params["force_config"])


def _check_model_name(name: str) -> None:
    from .._registry import unknown_name_message
    from ..models import list_models

    if name not in list_models():
        raise UnknownNameError(
            unknown_name_message("model", name, list_models(), listing="--list-models")
            + "; yours: --import the module that registers it"
        )


def _resume_hint(config: Any) -> str:
    return f"dcwp-prune {shlex.quote(config.model)} --data {config.data.name} --out {shlex.quote(config.out)} --resume"


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
        _run_locked(config, force_config, main_rank)


def _run_locked(config: Any, force_config: bool, main_rank: bool) -> None:
    from .._atomic import DiskWriteError
    from ..training.engine import StopRequested
    from .pipeline import run_dcwp
    from .run_folder import RunFolder

    label = " [quick schedule]" if config.quick else ""
    verb = "resuming" if config.resume else "running"
    if main_rank:  # under torchrun, once (rank 0 also prints the summary)
        click.echo(
            f"dcwp-prune {__version__}: {verb} {config.model} on {config.data.name} -> {config.out}{label}", err=True
        )
    try:
        with _echo_warnings():  # the run's notes (a repaired --overwrite, implausible mining) as they come
            result = run_dcwp(config, force_config=force_config, report=False)  # written below, signals deferred
    except KeyboardInterrupt as stop:  # StopRequested (Ctrl-C, SIGTERM): checkpoint written; a second one: the last
        signum = getattr(stop, "signum", signal.SIGINT)
        how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        if getattr(stop, "dcwp_checkpointed", RunFolder(config.out).has_checkpoint):
            saved = f"checkpoint saved ({stop.checkpoint})" if isinstance(stop, StopRequested) else "stopped at once"
            click.echo(f"\n{how}; {saved}. Resume with:\n  {_resume_hint(config)}", err=True)
        else:
            kept = "the run that was there is unchanged" if config.overwrite else "nothing was kept"
            click.echo(
                f"\n{how} before the first checkpoint; {kept} in {config.out}. "
                "Run the same command again to start over.",
                err=True,
            )
        sys.exit(128 + int(signum))  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    except DiskWriteError as err:  # a full disk or a file-size limit: nothing half-written is left
        if getattr(err, "dcwp_checkpointed", RunFolder(config.out).has_checkpoint):
            hint = f"The last checkpoint is intact: make room, then resume with:\n  {_resume_hint(config)}"
        else:
            hint = "Nothing was saved (no checkpoint yet): make room and run the command again."
        click.echo(f"Error: {err.strerror}\n{hint}", err=True)
        sys.exit(1)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    except FloatingPointError as err:  # a diverged loss: the last checkpoint is intact
        if getattr(err, "dcwp_checkpointed", RunFolder(config.out).has_checkpoint):
            hint = (
                f"The last checkpoint is intact: edit {os.path.join(config.out, 'config.json')} (e.g. a lower lr) "
                f"and resume with:\n  {_resume_hint(config)}"
            )
        else:
            hint = "Nothing was saved (no checkpoint yet): lower the learning rate and run the command again."
            if config.overwrite:
                hint += f" The run that was in {config.out} is unchanged."
        click.echo(f"Error: {err}\n{hint}", err=True)
        sys.exit(1)
    if result.run_dir is None:
        return  # not rank 0: rank 0 writes the report and prints the summary
    _report_and_summary(config.out, rebuild=f"dcwp-prune report {shlex.quote(config.out)}")


@contextlib.contextmanager
def _echo_warnings() -> Any:
    """Python warnings raised meanwhile are shown as ``warning: ...`` lines on stderr (no file and line)."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _report_and_summary(run_dir: str, rebuild: str) -> None:
    """Build the report and print the summary. Ctrl-C / SIGTERM meanwhile lets the report finish (a
    few seconds) and then exits 130 / 143; a second signal stops at once and names the command that
    rebuilds the report."""
    from ..training.engine import StopFlag
    from .report import build_report

    try:
        with StopFlag() as stop, _echo_warnings():
            report = build_report(run_dir)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped while writing the report; the run itself is complete. Rebuild the report with:\n  {rebuild}",
            err=True,
        )
        sys.exit(128 + int(stop.signum))
    except _USER_ERRORS as err:
        raise _fail(err) from None
    _print_summary(report)
    if stop.requested:
        how = "terminated (SIGTERM)" if stop.signum == signal.SIGTERM else "interrupted"
        click.echo(f"{how} while the report was written; the run and its report are complete", err=True)
        sys.exit(128 + int(stop.signum))


def _print_summary(report: Dict[str, Any]) -> None:
    from .report import ratio_label, summary_columns, summary_rows

    quick = "  [QUICK SCHEDULE: a demo, not a reproduction]" if report["quick"] else ""
    p = report["protocol"]
    source = p["digit_source"] or p["dataset"]
    click.echo(f"\n{p['model']} on {p['dataset']}{ratio_label(p['conflict_ratio_pct'])} ({source}){quick}")
    header = ["test (%)"] + summary_columns(report, "test")
    rows = [header] + summary_rows(report, "test")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    m, eff = report["mined"], report["efficiency"]
    dense, pruned = eff["dense"]["macs"], eff["pruned"]["macs"]
    ratio = (report.get("structured") or {}).get("pruning_ratio")
    reduction = f" ({dense / max(pruned, 1):.2f}x fewer, Torch-Pruning ratio {ratio:.3f})" if ratio is not None else ""
    click.echo(
        f"mined {m['count']} samples (precision {_fmt(m['precision'])}, recall {_fmt(m['recall'])}); "
        f"sparsity {100 * report['sparsity']:.1f} %; MACs {dense:,} -> {pruned:,}{reduction}; "
        f"saved model: {p['saved_model']}"
    )
    from .report import skipped_line

    if skipped_line(report):
        click.echo(skipped_line(report))
    for warning in report.get("warnings", []):
        click.echo(f"WARNING: {warning}", err=True)
    if report.get("write_skipped"):
        click.echo(
            f"note: the report was not written into the run folder ({report['write_skipped']}); the "
            "figures above are complete",
            err=True,
        )
    else:
        click.echo(f"report: {os.path.join(report['run_dir'], 'report.md')}")


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


# ---------------------------------------------------------------------------------- subcommands
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
    from ..data import write_cmnist
    from ..data.cmnist import STANDARD_RATIOS
    from .run_folder import check_writable

    try:
        check_writable(os.path.expanduser(out))
        written = write_cmnist(
            os.path.expanduser(out), ratios or STANDARD_RATIOS, source, mnist_root, download, seed, overwrite=overwrite
        )
    except _USER_ERRORS as err:
        raise _fail(err) from None
    from ..data.cmnist import cmnist_folders

    targets = [folder for _, folder in cmnist_folders(os.path.expanduser(out), ratios or STANDARD_RATIOS)]
    with open(os.path.join(targets[0], "generation.json")) as f:
        click.echo(f"digits: {json.load(f)['source']}")
    for path in targets:
        click.echo(f"wrote {path}" if path in written else f"kept {path} (already there, same generation)")


def _num_classes_of(arch: str, state: Dict[str, Any]) -> int:
    from ..models import classifier_of, create_model

    probe = create_model(arch, 2)
    head = classifier_of(probe)
    name = next(n for n, m in probe.named_modules() if m is head)
    key = f"{name}.weight"
    if key not in state:
        raise InputError(f"the model file has no {key!r}; is it a {arch} state dict? pass --num-classes")
    return int(state[key].shape[0])


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
    try:
        _prune(**params)
    except _USER_ERRORS as err:
        raise _fail(err) from None


def _prune(
    model_file: str,
    arch: str,
    scores: str,  # the path of the scores file
    num_classes: Optional[int],
    input_size: Optional[int],
    out: str,
    overwrite: bool,
    **rule_options: Any,  # the flags of _prune_rule_options (PruneConfig's fields)
) -> None:
    scores_path = scores
    import torch

    from .._atomic import write_json
    from ..adapters.torch_prune import dcwp_global_unstructured, pruned_sparsity
    from ..models import create_model, load_state_dict_checked, read_state_dict
    from ..scores import MaskScores
    from .config import PruneConfig, RunConfig, validate
    from .export import save_pruned_model
    from .run_folder import check_writable

    # every check first; the output folder is created only when the pruned model is ready
    for flag, value in (("--num-classes", num_classes), ("--input-size", input_size)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    check_writable(out)
    rule = PruneConfig.from_dict(_section(rule_options, "prune"))
    validate(RunConfig(prune=rule))  # ranges, at most one unstructured rule, structured-only options
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"output folder {out!r} already exists; pass --overwrite to replace its files")
    _check_model_name(arch)
    state = read_state_dict(model_file)
    model = create_model(arch, num_classes or _num_classes_of(arch, state))
    load_state_dict_checked(model, state, model_file)
    scores = MaskScores.load(scores_path, model=model)
    scored = set(scores.keys())
    unscored = [k for k in MaskScores.from_model(model).keys() if k not in scored]
    if unscored:
        click.echo(
            f"warning: {scores_path} has no scores for {len(unscored)} layer(s) that a run would score "
            f"({', '.join(unscored[:5])}{', ...' if len(unscored) > 5 else ''}); they are left unpruned",
            err=True,
        )
    size = input_size or (28 if arch in ("cnn", "mlp") else 224)
    example = torch.zeros(1, 3, size, size)
    if rule.structured:
        from ..adapters.structured import prune_channels

        result = prune_channels(model, scores, example, **rule.channel_options())
        summary = dict(result.to_dict(), structured=True)
        history: Optional[list] = result.history
    else:
        dcwp_global_unstructured(model, scores, **rule.rule())
        summary = {"structured": False, "sparsity": pruned_sparsity(model), **rule.rule()}
        history = None
    os.makedirs(out, exist_ok=True)
    save_pruned_model(
        out,
        model,
        arch=arch,
        num_classes=num_classes or _num_classes_of(arch, state),
        input_shape=[3, size, size],
        history=history,
        extra={"scores": os.path.abspath(scores_path)},
    )
    write_json(os.path.join(out, "prune_report.json"), summary)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "channels"}, indent=1))
    click.echo(f"wrote {os.path.join(out, 'model.safetensors')}")


@main.command("evaluate")
@click.argument("run_dir", type=click.Path())
@click.option("--device", default="auto", show_default=True)
@_import_option
def evaluate_command(run_dir: str, device: str) -> None:
    """Re-evaluate the saved model of RUN_DIR on its valid and test splits."""
    from .lock import run_lock

    try:
        with run_lock(run_dir, required=False), _echo_warnings():
            metrics, skipped = _evaluate(run_dir, device)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    for split in ("valid", "test"):
        m = metrics[split]
        click.echo(
            f"{split:>5}: accuracy {_fmt(m['accuracy'])}, unbiased {_fmt(m['unbiased'])}, "
            f"aligned {_fmt(m['aligned'])}, conflicting {_fmt(m['conflicting'])}, worst group {_fmt(m['worst_group'])}"
        )
    if skipped:
        click.echo(f"note: evaluation.json was not written ({skipped}); the figures above are complete", err=True)


def _evaluate(run_dir: str, device: str) -> Tuple[Dict[str, Any], Optional[str]]:
    from .._atomic import write_json
    from ..training.engine import Runtime, resolve_device
    from .config import RunConfig
    from .export import load_pruned_model, require_registered
    from .pipeline import RunLoaders, load_run_data, resolve_variant
    from .report import load_results

    results = load_results(run_dir)
    config = RunConfig.from_dict(results["config"])
    require_registered(run_dir, config.model, config.data.name)
    rt = Runtime(device=resolve_device(device))
    data = load_run_data(config, resolve_variant(config)["score_transform"])
    model = load_pruned_model(run_dir).to(rt.device)
    metrics = RunLoaders(config, data, rt).evaluate(model)
    try:
        write_json(os.path.join(run_dir, "evaluation.json"), {"selected": results["selected"], **metrics})
    except OSError as err:  # a read-only run folder: the metrics are printed all the same
        return metrics, f"{err.strerror or err}: {getattr(err, 'filename', None) or run_dir}"
    return metrics, None


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
        _report_and_summary(run_dir, rebuild=f"dcwp-prune report {shlex.quote(run_dir)}")


if __name__ == "__main__":
    main()
