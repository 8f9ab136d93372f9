"""What the ``dcwp-prune`` commands do, without click: a config file read and checked, ``--data-option`` parsed,
the default run folder, the run with its messages on a stop or a failure, the report and summary, ``prune`` and
``evaluate``. ``cli.py`` declares the commands and their options and maps the project's errors to exit status 2;
this module raises them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import warnings
from typing import Any, Dict, List, Optional, Tuple

from ..errors import InputError, UnknownNameError
from ..version import __version__

__all__ = [
    "check_model_name",
    "data_option",
    "default_out",
    "echo_warnings",
    "evaluate_run",
    "fmt",
    "import_modules",
    "registered_names",
    "print_summary",
    "prune_files",
    "read_toml",
    "report_and_summary",
    "resume_hint",
    "run_config",
    "run_locked",
    "write_cmnist_folders",
]


def _echo(message: str = "", err: bool = False) -> None:
    """One line on stdout (stderr with ``err``), flushed: what the commands print."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def read_toml(path: str) -> Dict[str, Any]:
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


def data_option(text: str) -> Tuple[str, Any]:
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


def default_out(model: str, overrides: Dict[str, Any]) -> str:
    data = overrides.get("data", {})
    name, ratio = data.get("name", "data"), data.get("ratio")
    parts = (
        [model, name] + ([f"{float(ratio):g}pct"] if ratio is not None else []) + [f"seed{overrides.get('seed', 0)}"]
    )
    return os.path.join("runs", "-".join(parts) + ("-quick" if overrides.get("quick") else ""))


def check_model_name(name: str) -> None:
    from .._registry import unknown_name_message
    from ..models import list_models

    if name not in list_models():
        raise UnknownNameError(
            unknown_name_message("model", name, list_models(), listing="--list-models")
            + "; yours: --import the module that registers it"
        )


def resume_hint(config: Any) -> str:
    return f"dcwp-prune {shlex.quote(config.model)} --data {config.data.name} --out {shlex.quote(config.out)} --resume"


def run_locked(config: Any, force_config: bool, main_rank: bool) -> None:
    from .._atomic import DiskWriteError
    from ..training.engine import StopRequested
    from .pipeline import run_dcwp
    from .run_folder import RunFolder

    label = " [quick schedule]" if config.quick else ""
    verb = "resuming" if config.resume else "running"
    if main_rank:  # under torchrun, once (rank 0 also prints the summary)
        _echo(f"dcwp-prune {__version__}: {verb} {config.model} on {config.data.name} -> {config.out}{label}", err=True)
    try:
        with echo_warnings():  # the run's notes (a repaired --overwrite, implausible mining) as they come
            result = run_dcwp(config, force_config=force_config, report=False)  # written below, signals deferred
    except KeyboardInterrupt as stop:  # StopRequested (Ctrl-C, SIGTERM): checkpoint written; a second one: the last
        signum = getattr(stop, "signum", signal.SIGINT)
        how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        if getattr(stop, "dcwp_checkpointed", RunFolder(config.out).has_checkpoint):
            saved = f"checkpoint saved ({stop.checkpoint})" if isinstance(stop, StopRequested) else "stopped at once"
            _echo(f"\n{how}; {saved}. Resume with:\n  {resume_hint(config)}", err=True)
        else:
            kept = "the run that was there is unchanged" if config.overwrite else "nothing was kept"
            _echo(
                f"\n{how} before the first checkpoint; {kept} in {config.out}. "
                "Run the same command again to start over.",
                err=True,
            )
        sys.exit(128 + int(signum))  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    except DiskWriteError as err:  # a full disk or a file-size limit: nothing half-written is left
        if getattr(err, "dcwp_checkpointed", RunFolder(config.out).has_checkpoint):
            hint = f"The last checkpoint is intact: make room, then resume with:\n  {resume_hint(config)}"
        else:
            hint = "Nothing was saved (no checkpoint yet): make room and run the command again."
        _echo(f"Error: {err.strerror}\n{hint}", err=True)
        sys.exit(1)
    except FloatingPointError as err:  # a diverged loss: the last checkpoint is intact
        if getattr(err, "dcwp_checkpointed", RunFolder(config.out).has_checkpoint):
            hint = (
                f"The last checkpoint is intact: edit {os.path.join(config.out, 'config.json')} (e.g. a lower lr) "
                f"and resume with:\n  {resume_hint(config)}"
            )
        else:
            hint = "Nothing was saved (no checkpoint yet): lower the learning rate and run the command again."
            if config.overwrite:
                hint += f" The run that was in {config.out} is unchanged."
        _echo(f"Error: {err}\n{hint}", err=True)
        sys.exit(1)
    if result.run_dir is None:
        return  # not rank 0: rank 0 writes the report and prints the summary
    report_and_summary(config.out, rebuild=f"dcwp-prune report {shlex.quote(config.out)}")


@contextlib.contextmanager
def echo_warnings() -> Any:
    """Python warnings raised meanwhile are shown as ``warning: ...`` lines on stderr (no file and line)."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        _echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def report_and_summary(run_dir: str, rebuild: str) -> None:
    """Build the report and print the summary. Ctrl-C / SIGTERM meanwhile lets the report finish (a
    few seconds) and then exits 130 / 143; a second signal stops at once and names the command that
    rebuilds the report."""
    from ..training.engine import StopFlag
    from .report import build_report

    try:
        with StopFlag() as stop, echo_warnings():
            report = build_report(run_dir)
    except KeyboardInterrupt:
        _echo(
            f"\nstopped while writing the report; the run itself is complete. Rebuild the report with:\n  {rebuild}",
            err=True,
        )
        sys.exit(128 + int(stop.signum))
    print_summary(report)
    if stop.requested:
        how = "terminated (SIGTERM)" if stop.signum == signal.SIGTERM else "interrupted"
        _echo(f"{how} while the report was written; the run and its report are complete", err=True)
        sys.exit(128 + int(stop.signum))


def print_summary(report: Dict[str, Any]) -> None:
    from .report import ratio_label, summary_columns, summary_rows

    quick = "  [QUICK SCHEDULE: a demo, not a reproduction]" if report["quick"] else ""
    p = report["protocol"]
    source = p["digit_source"] or p["dataset"]
    _echo(f"\n{p['model']} on {p['dataset']}{ratio_label(p['conflict_ratio_pct'])} ({source}){quick}")
    header = ["test (%)"] + summary_columns(report, "test")
    rows = [header] + summary_rows(report, "test")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        _echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    m, eff = report["mined"], report["efficiency"]
    dense, pruned = eff["dense"]["macs"], eff["pruned"]["macs"]
    ratio = (report.get("structured") or {}).get("pruning_ratio")
    reduction = f" ({dense / max(pruned, 1):.2f}x fewer, Torch-Pruning ratio {ratio:.3f})" if ratio is not None else ""
    _echo(
        f"mined {m['count']} samples (precision {fmt(m['precision'])}, recall {fmt(m['recall'])}); "
        f"sparsity {100 * report['sparsity']:.1f} %; MACs {dense:,} -> {pruned:,}{reduction}; "
        f"saved model: {p['saved_model']}"
    )
    from .report import skipped_line

    if skipped_line(report):
        _echo(skipped_line(report))
    for warning in report.get("warnings", []):
        _echo(f"WARNING: {warning}", err=True)
    if report.get("write_skipped"):
        _echo(
            f"note: the report was not written into the run folder ({report['write_skipped']}); the "
            "figures above are complete",
            err=True,
        )
    else:
        _echo(f"report: {os.path.join(report['run_dir'], 'report.md')}")


def fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def num_classes_of(arch: str, state: Dict[str, Any]) -> int:
    from ..models import classifier_of, create_model

    probe = create_model(arch, 2)
    head = classifier_of(probe)
    name = next(n for n, m in probe.named_modules() if m is head)
    key = f"{name}.weight"
    if key not in state:
        raise InputError(f"the model file has no {key!r}; is it a {arch} state dict? pass --num-classes")
    return int(state[key].shape[0])


def prune_files(
    model_file: str,
    arch: str,
    scores: str,  # the path of the scores file
    num_classes: Optional[int],
    input_size: Optional[int],
    out: str,
    overwrite: bool,
    rule_options: Dict[str, Any],  # PruneConfig's fields, as the prune flags gave them
) -> None:
    """``dcwp-prune prune``: saved DCWP scores applied to a saved model (no training), written to ``out``."""
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
    rule = PruneConfig.from_dict(rule_options)
    validate(RunConfig(prune=rule))  # ranges, at most one unstructured rule, structured-only options
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"output folder {out!r} already exists; pass --overwrite to replace its files")
    check_model_name(arch)
    state = read_state_dict(model_file)
    model = create_model(arch, num_classes or num_classes_of(arch, state))
    load_state_dict_checked(model, state, model_file)
    scores = MaskScores.load(scores_path, model=model)
    scored = set(scores.keys())
    unscored = [k for k in MaskScores.from_model(model).keys() if k not in scored]
    if unscored:
        _echo(
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
        num_classes=num_classes or num_classes_of(arch, state),
        input_shape=[3, size, size],
        history=history,
        extra={"scores": os.path.abspath(scores_path)},
    )
    write_json(os.path.join(out, "prune_report.json"), summary)
    _echo(json.dumps({k: v for k, v in summary.items() if k != "channels"}, indent=1))
    _echo(f"wrote {os.path.join(out, 'model.safetensors')}")


def evaluate_run(run_dir: str, device: str) -> Tuple[Dict[str, Any], Optional[str]]:
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


def run_config(model: str, overrides: Dict[str, Any], params: Dict[str, Any]) -> Any:
    """The RunConfig of ``dcwp-prune MODEL ...``: ``overrides`` (the config file, then the typed flags) on the
    preset, or, with ``--resume``, on the saved options of ``--out`` (differences are refused later)."""
    from .config import RunConfig
    from .presets import build_config, merge_options
    from .run_folder import read_saved_config

    if params["resume"] and params["out"]:
        out = os.path.expanduser(params["out"])
    elif "name" not in overrides.get("data", {}):
        raise InputError("--data is required (e.g. --data cmnist); see --list-datasets")
    elif params["out"] is not None and not params["out"].strip():
        raise InputError("--out is empty; name the run folder (e.g. --out runs/mine) or leave --out out")
    else:
        out = overrides.get("out") or params["out"] or default_out(model, overrides)
    overrides["out"] = out
    check_model_name(model)
    if params["resume"]:
        saved = read_saved_config(out)
        return RunConfig.from_dict(merge_options(saved, dict(overrides, resume=True, overwrite=params["overwrite"])))
    return build_config(params["preset"], overrides)


def write_cmnist_folders(
    out: str,
    ratios: Tuple[float, ...],
    source: str,
    mnist_root: Optional[str],
    download: bool,
    seed: int,
    overwrite: bool,
) -> List[str]:
    """``dcwp-prune make-cmnist``: Colored MNIST written under ``out``; the lines to print (digits, each folder)."""
    from ..data import write_cmnist
    from ..data.cmnist import STANDARD_RATIOS, cmnist_folders
    from .run_folder import check_writable

    check_writable(out)
    written = write_cmnist(out, ratios or STANDARD_RATIOS, source, mnist_root, download, seed, overwrite=overwrite)
    targets = [folder for _, folder in cmnist_folders(out, ratios or STANDARD_RATIOS)]
    with open(os.path.join(targets[0], "generation.json")) as f:
        lines = [f"digits: {json.load(f)['source']}"]
    return lines + [f"wrote {p}" if p in written else f"kept {p} (already there, same generation)" for p in targets]


def import_modules(names: Tuple[str, ...]) -> None:
    """``--import MODULE``: import the user's modules first, so that what they register exists (the current
    folder is searched too, as ``python -m`` would)."""
    import importlib

    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise InputError(
                f"cannot import {name!r} ({err}); pass a module name (mypkg.models, not a file "
                "path) found in the current folder or on PYTHONPATH"
            ) from None


def registered_names(kind: str) -> List[str]:
    """``--list-models`` / ``--list-datasets``: every registered name of ``kind`` (``models`` or ``datasets``)."""
    if kind == "models":
        from ..models import list_models

        return list(list_models())
    from ..data import list_datasets

    return list(list_datasets())
