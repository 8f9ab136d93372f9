"""The run report: ``report.json`` and ``report.md`` plus plots, built from a run folder alone.

Every number comes from the run's own files (``results.json``, ``metrics.jsonl``, the saved models)
or is measured here (parameters, MACs, latency), so ``dcwp-prune report RUN_DIR`` can rebuild it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .._atomic import write_json, write_text
from ..errors import InputError
from ..models import create_model
from .checkpoint import load_checkpoint
from .config import RunConfig, resolve_variant
from .export import load_pruned_model, require_registered

__all__ = [
    "build_report",
    "groups_line",
    "load_results",
    "ratio_label",
    "render_markdown",
    "skipped_line",
    "summary_columns",
    "summary_rows",
]

METRIC_KEYS = ("accuracy", "unbiased", "aligned", "conflicting", "conflicting_pooled", "worst_group")
_LABELS = {
    "vanilla": "vanilla f_D (ERM)",
    "vanilla_best_valid": "vanilla f_D (ERM), best on valid",
    "finetuned_best_valid": "DCWP+ arm: f_D fine-tuned, best on valid",
    "rewound_best_valid": "DCWP+ arm: rewound and retrained, best on valid",
    "dcwp_last": "DCWP, last iterate",
    "dcwp_best_valid": "DCWP, best on valid",
}


def ratio_label(ratio: Optional[float]) -> str:
    """`` 1%`` for a conflict ratio, empty for a dataset without one (CelebA, Waterbirds, CSV)."""
    return f" {ratio:g}%" if ratio is not None else ""


def load_results(run_dir: str) -> Dict[str, Any]:
    """``results.json`` of a finished run; errors name the folder or file and what to do."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir!r} does not exist; pass the --out folder of a finished run")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(run_dir, "config.json")):
            raise FileNotFoundError(
                f"{run_dir!r} holds no finished run (results.json is missing); finish it with "
                f"dcwp-prune MODEL --data NAME --out {run_dir} --resume"
            )
        raise FileNotFoundError(f"{run_dir!r} is not a dcwp-prune run folder (no config.json, no results.json)")
    try:
        with open(path) as f:
            results = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(
            f"{path!r} is damaged ({err}); delete it and rebuild it from the run's checkpoints with "
            f"dcwp-prune MODEL --data NAME --out {run_dir} --resume"
        ) from None
    if not isinstance(results, dict) or not {"config", "metrics", "selected"} <= set(results):
        raise InputError(f"{path!r} is not a dcwp-prune results file (keys config, metrics, selected missing)")
    return results


def _records(run_dir: str) -> List[Dict[str, Any]]:
    from .records import read_records

    return read_records(os.path.join(run_dir, "metrics.jsonl"))


@torch.inference_mode()
def _latency_ms(model: nn.Module, x: torch.Tensor, reps: int) -> float:
    model.eval()
    for _ in range(2):
        model(x)
    times = []
    for _ in range(reps):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _size(model: nn.Module, example: torch.Tensor) -> Dict[str, Any]:
    from ..adapters.structured import count_macs_params

    macs, params = count_macs_params(model, example)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {"macs": macs, "params": params, "params_nonzero": nonzero}


def _models(run_dir: str, config: RunConfig, num_classes: int) -> tuple[nn.Module, nn.Module]:
    pruned = load_pruned_model(run_dir)
    dense = create_model(config.model, num_classes)
    ckpt = os.path.join(run_dir, "checkpoints", "stage1_biased.pt")
    if os.path.isfile(ckpt):
        dense.load_state_dict(load_checkpoint(ckpt)["model_d"])
    return dense, pruned


def _efficiency(
    run_dir: str, config: RunConfig, num_classes: int, shape: List[int], latency_reps: int
) -> Dict[str, Any]:
    dense, pruned = _models(run_dir, config, num_classes)
    example = torch.zeros(1, *shape)
    out: Dict[str, Any] = {"dense": _size(dense, example), "pruned": _size(pruned, example), "latency": []}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for batch in (1, 32):
            x = torch.randn(batch, *shape, device=device)
            d, p = _latency_ms(dense.to(device), x, latency_reps), _latency_ms(pruned.to(device), x, latency_reps)
            out["latency"].append({"device": device, "batch": batch, "dense_ms": d, "pruned_ms": p, "speedup": d / p})
    return out


def _options_label(options: Optional[Dict[str, Any]]) -> str:
    """`` (csv=meta.csv, path_col=file)``: the dataset's own options of a run, if it had any."""
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else ""


def build_report(run_dir: str, latency_reps: int = 10) -> Dict[str, Any]:
    """Write ``report.json``, ``report.md`` and the PNG plots into ``run_dir``; return the report."""
    from .plots import plot_curves, plot_group_accuracy, plot_kept

    results = load_results(run_dir)
    config = RunConfig.from_dict(results["config"])
    require_registered(run_dir, config.model)
    info = results.get("info", {})
    num_classes = int(info.get("num_classes") or len(results["metrics"]["vanilla"]["test"]["group_accuracy"]))
    with open(os.path.join(run_dir, "model.json")) as f:
        shape = json.load(f)["input_shape"]
    data = info.get("data", {})
    selection = "last iterate" if results["selected"] == "last" else "best fine-tuning iterate on the valid split"
    report = {
        "run_dir": os.path.abspath(run_dir),
        "quick": config.quick,
        "variant": config.variant,
        "protocol": {
            "dataset": config.data.name,
            "conflict_ratio_pct": config.data.ratio,
            "model": config.model,
            "digit_source": data.get("source"),
            "data_options": dict(config.data.options),
            "valid_split": data.get("valid", "release / generated"),
            "test_protocol": (info.get("test") or {}).get("test_protocol", config.data.test_protocol),
            "saved_model": selection,
            "seed": config.seed,
            "init": config.weights or "random (no pretrained weights)",
            "schedule": {
                "f_D": config.biased.iterations,
                "f_B": config.biased.replace(biased_length=resolve_variant(config)["fb_length"]).schedule("b")[0],
                "mask": config.mask.iterations,
                "finetune": config.finetune.iterations,
                "quick": config.quick,
                "kept_as_written": list(config.quick_fixed),
            },
        },
        "warnings": list(results.get("warnings") or []),
        "skipped_corrupt": _skipped(info),
        "mined": results["mined"],
        "sparsity": results["sparsity"],
        "structured": (
            {k: v for k, v in results["structured"].items() if k != "channels"} | {"ranking": _ranking(config)}
        )
        if results.get("structured")
        else None,
        "metrics": {
            name: {
                split: {k: vals[split][k] for k in METRIC_KEYS} | {"worst": _worst(vals[split])}
                for split in ("valid", "test")
            }
            | ({"iteration": vals["iteration"]} if "iteration" in vals else {})
            for name, vals in sorted(
                results["metrics"].items(),
                key=lambda kv: list(_LABELS).index(kv[0]) if kv[0] in _LABELS else len(_LABELS),
            )
        },
        "groups": {split: _group_sizes(results["metrics"]["vanilla"][split]) for split in ("valid", "test")},
        "efficiency": _efficiency(run_dir, config, num_classes, shape, latency_reps),
        "files": sorted(os.listdir(run_dir)),
    }
    title = f"{config.model} on {config.data.name}{ratio_label(config.data.ratio)}" + (
        " [quick]" if config.quick else ""
    )
    report["files"] = sorted(
        set(report["files"])
        | {"report.json", "report.md", "kept_per_layer.png", "group_accuracy.png", "training_curves.png"}
    )
    try:
        plot_kept(results["kept"], os.path.join(run_dir, "kept_per_layer.png"), title, order=_layer_order(run_dir))
        plot_group_accuracy(
            results["metrics"]["vanilla"]["test"]["group_accuracy"],
            results["metrics"]["dcwp_last"]["test"]["group_accuracy"],
            os.path.join(run_dir, "group_accuracy.png"),
            f"{title}: test accuracy per (class, bias) group",
        )
        plot_curves(_records(run_dir), os.path.join(run_dir, "training_curves.png"), title)
        write_json(os.path.join(run_dir, "report.json"), report)
        write_text(os.path.join(run_dir, "report.md"), render_markdown(report))
    except OSError as err:  # a read-only folder or medium, a full disk: the report is still returned
        report["write_skipped"] = f"{err.strerror or err}: {getattr(err, 'filename', None) or run_dir}"
    return report


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _layer_order(run_dir: str) -> Optional[List[str]]:
    """The scored layers in network order, as the scores file lists them (results.json sorts its keys)."""
    path = os.path.join(run_dir, "scores.safetensors")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as f:
            return json.loads((f.metadata() or {}).get("keys", "null"))
    except (OSError, ValueError, SafetensorError):  # missing or foreign scores file: the results' order
        return None


def _worst(m: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The worst (class, bias) group: its class, bias label, accuracy and size (ties: the largest group)."""
    acc, counts = m.get("group_accuracy"), m.get("group_counts")
    if not acc or not counts:
        return None
    cells = [(a, -int(counts[i][j]), i, j) for i, row in enumerate(acc) for j, a in enumerate(row) if a is not None]
    if not cells:
        return None
    a, n, i, j = min(cells)
    return {"class": i, "bias": j, "accuracy": a, "size": -n}


def _group_sizes(m: Dict[str, Any]) -> Dict[str, Any]:
    """How many (class, bias) groups a split has and how large they are: the weight behind each group accuracy."""
    counts = m.get("group_counts") or []
    sizes = [int(n) for row in counts for n in row if int(n) > 0]
    aligned = sum(int(counts[i][i]) for i in range(len(counts)))
    return {
        "groups": len(sizes),
        "min": min(sizes, default=0),
        "max": max(sizes, default=0),
        "median": statistics.median(sizes) if sizes else 0,
        "aligned_samples": aligned,
        "conflicting_samples": sum(sizes) - aligned,
    }


def summary_columns(report: Dict[str, Any], split: str = "test") -> List[str]:
    """The metric columns worth showing: ``unbiased`` (the mean group accuracy) only where it differs from
    ``accuracy`` (on a balanced test set the two are the same number)."""
    rows = [vals[split] for vals in report["metrics"].values()]
    same = all(
        m["accuracy"] is not None and m["unbiased"] is not None and abs(m["accuracy"] - m["unbiased"]) < 5e-4
        for m in rows
    )
    return ["accuracy", "aligned", "conflicting"] + ([] if same else ["unbiased"]) + ["worst group"]


def summary_rows(report: Dict[str, Any], split: str = "test") -> List[List[str]]:
    """Rows ``[model, *summary_columns]`` in percent; the worst group named (class / bias, its size)."""
    rows = []
    for name, vals in report["metrics"].items():
        label = _LABELS.get(name, name) + (f" (it {vals['iteration']})" if "iteration" in vals else "")
        m = vals[split]
        row = [label]
        for column in summary_columns(report, split):
            if column == "worst group":
                w = m.get("worst")
                row.append(
                    _pct(m["worst_group"]) + (f" (class {w['class']} / bias {w['bias']}, n={w['size']})" if w else "")
                )
            else:
                row.append(_pct(m[column]))
        rows.append(row)
    return rows


def groups_line(report: Dict[str, Any], split: str) -> str:
    """``100 (class, bias) groups of 1-12 images (median 4); 450 aligned, 50 conflicting``."""
    g = (report.get("groups") or {}).get(split)
    if not g:
        return ""
    sizes = (
        f"{g['min']} images each" if g["min"] == g["max"] else f"{g['min']}-{g['max']} images (median {g['median']:g})"
    )
    return (
        f"{g['groups']} (class, bias) groups of {sizes}; "
        f"{g['aligned_samples']} aligned and {g['conflicting_samples']} conflicting images"
    )


def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _schedule_label(schedule: Optional[Dict[str, Any]]) -> str:
    """``f_D 640 / f_B 160 / mask 400 / fine-tuning 160 iterations (--quick; ...)``."""
    if not schedule:
        return "n/a"
    b = schedule.get("f_B")
    text = (
        f"f_D {schedule['f_D']} / f_B {b if b is not None else schedule['f_D']} / mask {schedule['mask']} / "
        f"fine-tuning {schedule['finetune']} iterations"
    )
    if schedule.get("quick"):
        kept = schedule.get("kept_as_written") or []
        text += " (--quick" + (f"; kept as written: {', '.join(kept)}" if kept else "") + ")"
    return text


def _skipped(info: Dict[str, Any]) -> Dict[str, int]:
    """Unreadable images ``--skip-corrupt`` dropped, per split (valid only when it has files of its own:
    a valid split carved from train was counted with train)."""
    out = {
        "train": (info.get("data") or {}).get("skipped_corrupt"),
        "test": (info.get("test") or {}).get("skipped_corrupt"),
    }
    valid = info.get("valid") or {}
    if valid.get("valid") in ("release", "the CSV's valid rows"):
        out["valid"] = valid.get("skipped_corrupt")
    return {k: int(v) for k, v in out.items() if v}


def skipped_line(report: Dict[str, Any]) -> str:
    """``skipped 3 unreadable images (--skip-corrupt): train 2, test 1``, or ``""``."""
    skipped = report.get("skipped_corrupt") or {}
    if not skipped:
        return ""
    return f"skipped {sum(skipped.values())} unreadable image(s) (--skip-corrupt): " + ", ".join(
        f"{k} {v}" for k, v in skipped.items()
    )


def render_markdown(report: Dict[str, Any]) -> str:
    p, eff = report["protocol"], report["efficiency"]
    quick = " **[quick schedule: a scaled-down demo, not a reproduction]**" if report["quick"] else ""
    ratio = f" ({p['conflict_ratio_pct']:g}% conflicting)" if p["conflict_ratio_pct"] is not None else ""
    out = [f"# DCWP run: {p['model']} on {p['dataset']}{ratio}{quick}", ""]
    out += [f"> **WARNING: {w}**\n" for w in report.get("warnings", [])]
    out += [
        f"- variant: `{report['variant']}`; saved model: {p['saved_model']}; seed {p['seed']}; init: {p['init']}",
        f"- schedule: {_schedule_label(p.get('schedule'))}",
        f"- data: {p['digit_source'] or p['dataset']}{_options_label(p.get('data_options'))}; valid split: "
        f"{p['valid_split']}; test protocol: {p['test_protocol']}",
        f"- mined bias-conflicting samples: {report['mined']['count']} of {report['mined']['num_samples']} "
        f"(method `{report['mined']['method']}`, precision {_pct(report['mined']['precision'])} %, "
        f"recall {_pct(report['mined']['recall'])} %)",
    ] + ([f"- {skipped_line(report)}"] if skipped_line(report) else [])
    out += [""]
    for split in ("valid", "test"):
        header = ["model"] + summary_columns(report, split)
        note = groups_line(report, split)
        out += [f"## Group accuracies on {split} (%)", ""] + ([note, ""] if note else [])
        out += [_table(header, summary_rows(report, split)), ""]
        if "unbiased" not in header:
            out += [
                "The mean group accuracy (`unbiased`) equals `accuracy` on this split: it is balanced over "
                "(class, bias) groups.",
                "",
            ]
    d, q = eff["dense"], eff["pruned"]
    out += [
        "## Size and speed",
        "",
        _table(
            ["", "dense f_D", "pruned"],
            [
                ["parameters", f"{d['params']:,}", f"{q['params']:,}"],
                ["non-zero parameters", f"{d['params_nonzero']:,}", f"{q['params_nonzero']:,}"],
                ["MACs", f"{d['macs']:,}", f"{q['macs']:,}"],
            ],
        ),
        "",
        f"Sparsity of the scored weights: {100 * report['sparsity']:.2f} %. "
        + (
            _structured_line(report["structured"])
            if report["structured"]
            else "Unstructured pruning: zeros do not reduce MACs or latency in dense PyTorch."
        ),
        "",
        _table(
            ["device", "batch", "dense ms", "pruned ms", "speed-up"],
            [
                [r["device"], str(r["batch"]), f"{r['dense_ms']:.2f}", f"{r['pruned_ms']:.2f}", f"{r['speedup']:.2f}x"]
                for r in eff["latency"]
            ],
        ),
        "",
        "Plots: `kept_per_layer.png`, `group_accuracy.png`, `training_curves.png`.",
        "",
    ]
    return "\n".join(out)


def _ranking(config: RunConfig) -> str:
    """How the channels were ranked (``prune.global_pruning`` / ``prune.normalizer``), in words."""
    p = config.prune
    if not p.global_pruning:
        return "within each layer"
    return "across layers" + (f", each layer's importances divided by their {p.normalizer}" if p.normalizer else "")


def _structured_line(info: Dict[str, Any]) -> str:
    """What structured pruning did: the ranking, the ratio (the one found, when a MACs target was given) and
    the reduction."""
    parts = [f"ranked {info['ranking']}"] if info.get("ranking") else []
    if info.get("pruning_ratio") is not None:
        parts.append(
            f"Torch-Pruning ratio {info['pruning_ratio']:.3f}"
            + (f", {info['macs_ratio']:.2f}x fewer MACs" if info.get("macs_ratio") else "")
        )
    return "Structured pruning: channels were removed" + (f" ({'; '.join(parts)})" if parts else "") + "."
