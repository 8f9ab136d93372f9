"""Render ``results.jsonl`` into ``table.md`` and plots: mean +/- std over seeds, published rows beside.

Only numbers from ``results.jsonl`` enter our rows; published numbers come from ``benchmarks.published``
and are shown in rows labelled "published", with their protocol, never averaged with ours.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional

from benchmarks.profiles import CLEAN_STUDY, PLUS_STUDY
from benchmarks.published import PUBLISHED

__all__ = ["headline_block", "readme_block", "render", "rewrite_readme", "summarise"]

#: The headline metric per dataset (the papers' numbers): pooled accuracy on the unbiased test set for
#: Colored MNIST / CIFAR10-C, the mean of the bias-conflicting groups for BFFHQ (DCWP protocol).
HEADLINE = {"cmnist": "accuracy", "cifar10c": "accuracy", "bffhq": "conflicting"}
BACKBONE_NAMES = {"mlp": "LfF's 3 x 100 MLP", "cnn": "DCWP's CNN", "resnet18": "ResNet-18 (random init)"}
ORDER = (
    "erm",
    "lff",
    "jtt",
    "lc",
    "denetdm",
    "mrm",
    "magnitude",
    "random",
    "dcwp-official",
    "dcwp-clean",
    "dcwp-plus",
    "dcwp-plus-shuffle",
    "structured-magnitude",
    "structured-random",
    "dcwp-structured",
    "dcwp-structured-meannorm",
    "structured-random-local",
    "dcwp-structured-local",
)


def _latest(records: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The last record of each cell (a retried failure is replaced by its success)."""
    last: Dict[tuple, Dict[str, Any]] = {}
    for r in records:
        last[(r["dataset"], r["ratio"], r["backbone"], r["method"], r["seed"], r["schedule"])] = r
    return list(last.values())


def _fmt(values: List[float], scale: float = 100.0, expected: int = 0) -> str:
    """``mean ± std``; ``(n=k)`` when fewer seeds than ``expected`` finished."""
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    n = f" (n={len(values)})" if len(values) < expected or len(values) == 1 else ""
    if len(values) == 1:
        return f"{mean:.1f}{n}"
    return f"{mean:.1f} ± {statistics.stdev(values) * scale:.1f}{n}"


def summarise(records: List[Dict[str, Any]]) -> Dict[tuple, Dict[str, Any]]:
    """``{(dataset, backbone, schedule, method, ratio): {metric: [values over seeds]}}`` of the ok cells."""
    out: Dict[tuple, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _latest(records):
        if r.get("status") != "ok":
            continue
        key = (r["dataset"], r["backbone"], r["schedule"], r["method"], float(r["ratio"]))
        metric = HEADLINE.get(r["dataset"], "accuracy")
        cell = out[key]
        cell["test"].append(r["test"][metric])
        cell["valid"].append(r["valid"][metric])
        if r.get("test_all_colors"):
            cell["all_colors"].append(r["test_all_colors"][metric])
        cell["sparsity"].append(float(r.get("sparsity") or 0.0))
        cell["macs"].append(float(r.get("macs") or 0))
        cell["wall_s"].append(float(r.get("wall_s") or 0))
        cell["selection"].append(r.get("selection"))  # type: ignore[arg-type]
        if r.get("last"):
            cell["last"].append(r["last"]["test"][metric])
        if r.get("best_valid"):
            cell["best_valid"].append(r["best_valid"]["test"][metric])
            cell["best_iteration"].append(float(r["best_valid"].get("iteration") or 0))
        mined = r.get("mined") or {}
        for k in ("count", "precision", "recall"):
            if mined.get(k) is not None:
                cell[f"mined_{k}"].append(float(mined[k]))
    return out


def render(out: str, profile: Any) -> str:
    """Write ``out/table.md`` (and the plots) from ``out/results.jsonl``; return the markdown."""
    path = os.path.join(out, "results.jsonl")
    records = [json.loads(line) for line in open(path)] if os.path.isfile(path) else []
    summary = summarise(records)
    n_seeds = len(profile.seeds)
    lines = [
        f"# Benchmark `{profile.name}`",
        "",
        f"Profile: {profile.note}.",
        "",
        "Produced by `python -m benchmarks.reproduce --profile " + profile.name + "` (rows: ours, mean ± std over "
        "the seeds that finished, (n=k) when fewer than the profile's seeds finished; rows marked *published* are "
        "the papers' numbers under "
        "the protocol named beside them and are never mixed into ours). Selection: *last* = last iterate, "
        "*best_valid* = best iterate on the validation split; never on test. Sparsity: zero fraction of the "
        "scored weights; MACs: Torch-Pruning's count of the saved model (unstructured zeros do not reduce it, "
        "structured pruning does).",
        "",
    ]
    groups = sorted({(k[0], k[1], k[2]) for k in summary})
    for dataset, backbone, schedule in groups:
        ratios = sorted({k[4] for k in summary if k[:3] == (dataset, backbone, schedule)})
        metric = HEADLINE.get(dataset, "accuracy")
        methods = [
            m
            for m in ORDER
            if (dataset, backbone, schedule, m, ratios[0]) in summary
            or any((dataset, backbone, schedule, m, r) in summary for r in ratios)
        ]
        ablations = sorted(
            {k[3] for k in summary if k[:3] == (dataset, backbone, schedule) and k[3].startswith("abl-")}
        )
        lines += [
            f"## {dataset}, {BACKBONE_NAMES.get(backbone, backbone)}, schedule: {schedule}",
            "",
            f"Test {metric} (%) at each conflict ratio; Colored MNIST also on the balanced all-colours view "
            "(every test digit in all ten colours, 10x the images) in the second table.",
            "",
        ]
        lines += _table(summary, dataset, backbone, schedule, methods, ratios, "test", n_seeds)
        lines += _published(dataset, backbone, ratios)
        lines += _selection_table(summary, dataset, backbone, schedule, methods, ratios, n_seeds)
        if any(
            summary[(dataset, backbone, schedule, m, r)].get("all_colors")
            for m in methods
            for r in ratios
            if (dataset, backbone, schedule, m, r) in summary
        ):
            lines += ["", "Balanced all-colours test view:", ""]
            lines += _table(summary, dataset, backbone, schedule, methods, ratios, "all_colors", n_seeds)
        lines += [
            "",
            "DCWP (official) internals: mined bias-conflicting set and sparsity reached:",
            "",
            "| ratio | mined | precision | recall | sparsity | valid " + metric + " |",
            "|---|---|---|---|---|---|",
        ]
        for r in ratios:
            c = summary.get((dataset, backbone, schedule, "dcwp-official", r))
            if c:
                lines.append(
                    f"| {r:g} % | {_fmt(c.get('mined_count', []), 1)} | {_fmt(c.get('mined_precision', []))} | "
                    f"{_fmt(c.get('mined_recall', []))} | {_fmt(c['sparsity'])} | {_fmt(c['valid'])} |"
                )
        lines += _sweep_tables(summary, dataset, backbone, schedule, ratios, records, n_seeds)
        if ablations:
            lines += ["", "Ablations of DCWP (official):", ""]
            lines += _table(
                summary, dataset, backbone, schedule, ["dcwp-official"] + ablations, ratios, "test", n_seeds
            )
        study = [m for m in CLEAN_STUDY if any((dataset, backbone, schedule, m, r) in summary for r in ratios)]
        if study:
            lines += [
                "",
                "The variants one setting at a time: official with clean's best-on-valid selection "
                "(`official-select-best-valid`), clean with one of its settings back to official "
                "(`clean-<setting>-official`, `clean-mask-upweight-80`), and clean's fixes (`clean-fix-*`); "
                "same seeds, same stage 1 (but `official-cpu-bf16`: official with bf16 autocast on the CPU in "
                "every stage, stage 1 included):",
                "",
            ]
            lines += _table(
                summary, dataset, backbone, schedule, ["dcwp-official", "dcwp-clean"] + study, ratios, "test", n_seeds
            )
        plus = [m for m in PLUS_STUDY if any((dataset, backbone, schedule, m, r) in summary for r in ratios)]
        plus = (
            ["dcwp-official"]
            + plus
            + [
                m
                for m in ("dcwp-plus", "dcwp-plus-shuffle")
                if any((dataset, backbone, schedule, m, r) in summary for r in ratios)
            ]
        )
        if len(plus) > 1:
            lines += [
                "",
                "DCWP+ candidates (issue 21): each setting alone on top of official with the best-on-valid "
                "selection (`official-select-best-valid`), same seeds and stage 1; `plus-rewind-init-shuffle` is "
                "the random-mask control of `plus-rewind-init` (each layer's kept weights drawn at random, its "
                "sparsity kept). Settings are chosen on **valid** (second table), never on test:",
                "",
            ]
            lines += _table(summary, dataset, backbone, schedule, plus, ratios, "test", n_seeds)
            lines += ["", "The same cells on valid (the split the candidates are chosen on):", ""]
            lines += _table(summary, dataset, backbone, schedule, plus, ratios, "valid", n_seeds)
        lines.append("")
    failed = [r for r in _latest(records) if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed cells", ""] + [
            f"- {r['dataset']} {r['ratio']:g}% {r['backbone']} seed {r['seed']} "
            f"{r['method']}: {r.get('error', '')[:200]}"
            for r in failed
        ]
    text = "\n".join(lines).rstrip() + "\n"
    from dcwp_prune._atomic import write_text

    write_text(os.path.join(out, "table.md"), text)
    _plots(summary, out)
    return text


def _sweep_tables(
    summary: Dict[tuple, Any],
    dataset: str,
    backbone: str,
    schedule: str,
    ratios: List[float],
    records: List[Dict[str, Any]],
    expected: int,
) -> List[str]:
    """The mask on trial: test accuracy after pruning f_D to each level with DCWP's scores, weight magnitude or
    at random and running DCWP's stage 4 (last iterate); and where DCWP's own run pruned, layer by layer."""
    from benchmarks.methods import SWEEP_KINDS, SWEEP_MACS, SWEEP_SPARSITIES, sweep_name

    have = lambda m: any((dataset, backbone, schedule, m, r) in summary for r in ratios)  # noqa: E731
    if not any(have(m) for m in _sweep_methods()):
        return []
    metric = HEADLINE.get(dataset, "accuracy")
    out = [
        "",
        f"The mask on trial (sweep): f_D pruned to each total sparsity of the scored weights (unstructured) or "
        "MACs reduction (structured, channels ranked within each layer) by DCWP's learned scores, by weight "
        f"magnitude or at random, then exactly DCWP's stage 4; test {metric} (%), last iterate. At each level only "
        "the choice of weights differs.",
        "",
        "| level | ranked by | " + " | ".join(f"{r:g} %" for r in ratios) + " |",
        "|" + "---|" * (len(ratios) + 2),
    ]
    levels = [(s, False, f"{100 * s:g} % sparse") for s in SWEEP_SPARSITIES] + [
        (m, True, f"{m:g}x fewer MACs") for m in SWEEP_MACS
    ]
    for level, structured, label in levels:
        for kind in SWEEP_KINDS:
            m = sweep_name(kind, level, structured)
            if not have(m):
                continue
            cells = []
            for r in ratios:
                c = summary.get((dataset, backbone, schedule, m, r))
                cells.append(_fmt(c["test"], expected=expected) if c else "-")
            out.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    kept: Dict[float, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    order: List[str] = []
    for r in _latest(records):
        if (
            r.get("status") == "ok"
            and r["method"] == "dcwp-official"
            and r.get("kept")
            and (r["dataset"], r["backbone"], r["schedule"]) == (dataset, backbone, schedule)
        ):
            for layer, v in r["kept"].items():
                if layer != "total":
                    kept[float(r["ratio"])][layer].append(float(v))
                    order += [] if layer in order else [layer]
    by_level: Dict[float, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for r in _latest(records):  # where DCWP's scores put the pruning at each sweep level (random: uniform)
        if (
            r.get("status") == "ok"
            and r["method"].startswith("sweep-scores-")
            and r.get("kept")
            and (r["dataset"], r["backbone"], r["schedule"]) == (dataset, backbone, schedule)
        ):
            for layer, v in r["kept"].items():
                by_level[float(r["sweep"]["level"])][layer].append(float(v))
                order += [] if layer in order else [layer]
    order = _network_order(backbone, order)
    if by_level:
        levels = sorted(by_level)
        out += [
            "",
            "Where DCWP's learned scores prune at each sweep level: kept fraction of each scored layer (%), mean "
            "over ratios and seeds (random pruning keeps the same fraction of every layer, magnitude ranks "
            "all layers together):",
            "",
            "| layer | " + " | ".join(f"{100 * v:g} % sparse" for v in levels) + " |",
            "|" + "---|" * (len(levels) + 1),
        ]
        for layer in order:
            out.append(
                f"| {layer.removesuffix('.weight')} | "
                + " | ".join(
                    f"{100 * statistics.fmean(by_level[v][layer]):.1f}" if by_level[v].get(layer) else "-"
                    for v in levels
                )
                + " |"
            )
    if kept:
        out += [
            "",
            "Where DCWP (official) prunes: kept fraction of each scored layer (%), mean over seeds:",
            "",
            "| layer | " + " | ".join(f"{r:g} %" for r in ratios) + " |",
            "|" + "---|" * (len(ratios) + 1),
        ]
        for layer in order:
            out.append(
                f"| {layer.removesuffix('.weight')} | "
                + " | ".join(
                    f"{100 * statistics.fmean(kept[r][layer]):.1f}" if kept[r].get(layer) else "-" for r in ratios
                )
                + " |"
            )
    return out


def _network_order(backbone: str, layers: List[str]) -> List[str]:
    """``layers`` from input to output (records store them sorted by name), as the backbone defines them."""
    try:
        from dcwp_prune.models import create_model
        from dcwp_prune.scores import MaskScores

        keys = MaskScores.from_model(create_model(backbone, 10)).keys()
    except (KeyError, ValueError):  # a backbone this checkout does not know: keep the records' order
        return layers
    return sorted(layers, key=lambda k: keys.index(k) if k in keys else len(keys))


def _sweep_methods() -> List[str]:
    from benchmarks.methods import SWEEP

    return list(SWEEP)


def _table(
    summary: Dict[tuple, Any],
    dataset: str,
    backbone: str,
    schedule: str,
    methods: List[str],
    ratios: List[float],
    field: str,
    expected: int = 0,
) -> List[str]:
    head = "| method | selection | " + " | ".join(f"{r:g} %" for r in ratios) + " | sparsity | MACs |"
    rows = [head, "|" + "---|" * (len(ratios) + 4)]
    dense = [v for r in ratios for v in (summary.get((dataset, backbone, schedule, "erm", r)) or {}).get("macs", [])]
    for m in methods:
        cells, sparsity, macs, selection = [], [], [], "-"
        for r in ratios:
            c = summary.get((dataset, backbone, schedule, m, r))
            cells.append(_fmt(c[field], expected=expected) if c and c.get(field) else "-")
            if c:
                sparsity += c["sparsity"]
                macs += c["macs"]
                selection = c["selection"][0] or "-"
        sp = f"{100 * statistics.fmean(sparsity):.0f} %" if sparsity else "-"
        mc = f"{statistics.fmean(macs) / 1e6:.2f} M" if macs else "-"
        if macs and dense and statistics.fmean(macs) < statistics.fmean(dense):  # fewer MACs than the dense ERM model
            mc += f" ({statistics.fmean(dense) / statistics.fmean(macs):.2f}x fewer)"
        rows.append(f"| {m} | {selection} | " + " | ".join(cells) + f" | {sp} | {mc} |")
    return rows


def _selection_table(
    summary: Dict[tuple, Any],
    dataset: str,
    backbone: str,
    schedule: str,
    methods: List[str],
    ratios: List[float],
    expected: int,
) -> List[str]:
    """Every method's last iterate and its best-on-valid iterate (each evaluated on valid at DCWP's stage-4
    cadence), so no method is compared under a selection the others were not allowed."""
    rows = []
    for m in methods:
        cells = [summary.get((dataset, backbone, schedule, m, r)) or {} for r in ratios]
        if not any(c.get("best_valid") for c in cells):
            continue
        for field, label in (("last", "last"), ("best_valid", "best on valid")):
            values = [_fmt(c[field], expected=expected) if c.get(field) else "-" for c in cells]
            its = [v for c in cells for v in c.get("best_iteration", [])] if field == "best_valid" else []
            where = f" (median it {statistics.median(its):.0f})" if its else ""
            rows.append(f"| {m} | {label}{where} | " + " | ".join(values) + " |")
    if not rows:
        return []
    return [
        "",
        "Both iterates of every method (each evaluated on valid, and test beside it, at DCWP's stage-4 cadence; "
        "*best on valid* chosen on valid only; methods recorded before this was measured are left out):",
        "",
        "| method | iterate | " + " | ".join(f"{r:g} %" for r in ratios) + " |",
        "|" + "---|" * (len(ratios) + 2),
    ] + rows


def _published(dataset: str, backbone: str, ratios: List[float]) -> List[str]:
    rows = []
    for entry in PUBLISHED.get((dataset, backbone), []):
        values = [entry["values"].get(r) for r in ratios]
        if not any(v is not None for v in values):
            continue
        cells = " | ".join("-" if v is None else f"{v:.1f}" for v in values)
        rows.append(f"| *published* {entry['method']} | {entry['selection']} | {cells} | | |")
    if rows:
        protocol = PUBLISHED[(dataset, backbone)][0]["protocol"]
        rows = [
            "",
            f"*Published*, {protocol}:",
            "",
            "| method | selection | " + " | ".join(f"{r:g} %" for r in ratios) + " | | |",
            "|" + "---|" * (len(ratios) + 4),
        ] + rows
    return rows


def _save(plt: Any, fig: Any, path: str) -> None:
    from dcwp_prune._atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _plots(summary: Dict[tuple, Any], out: str) -> None:
    """``accuracy_by_ratio.png`` (per backbone, one line per method) and ``accuracy_vs_sparsity.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(k[0], k[1], k[2]) for k in summary})
    if not groups:
        return
    # one colour and marker per method, the same in every panel and plot (more methods than a 10-colour cycle)
    style = {
        m: {"color": plt.get_cmap("tab20")(i % 20), "marker": "os^vDP<>Xph*d"[i % 13]} for i, m in enumerate(ORDER)
    }
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.5), squeeze=False)
    for ax, (dataset, backbone, schedule) in zip(axes[0], groups):
        for m in ORDER:
            pts = sorted((k[4], v["test"]) for k, v in summary.items() if k[:4] == (dataset, backbone, schedule, m))
            if not pts:
                continue
            xs = [p[0] for p in pts]
            means = [100 * statistics.fmean(p[1]) for p in pts]
            errs = [100 * statistics.stdev(p[1]) if len(p[1]) > 1 else 0.0 for p in pts]
            ax.errorbar(xs, means, yerr=errs, capsize=3, label=m, **style[m])
        ax.set_xscale("log")
        ax.minorticks_off()  # the log axis' minor labels (3 x 10^0, ...) overlap the ratios
        ax.set_xticks([k[4] for k in summary if k[:3] == (dataset, backbone, schedule)])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("conflict ratio (%)")
        ax.set_ylabel(f"test {HEADLINE.get(dataset, 'accuracy')} (%)")
        ax.set_title(f"{dataset} {backbone} ({schedule})")
        ax.legend(fontsize=6, ncol=2, loc="upper left")
    _save(plt, fig, os.path.join(out, "accuracy_by_ratio.png"))

    # the README's plot: the headline methods at their best-on-valid iterate
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (dataset, backbone, schedule) in zip(axes[0], groups):
        for m in HEADLINE_METHODS:
            pts = sorted(
                (k[4], v["best_valid"])
                for k, v in summary.items()
                if k[:4] == (dataset, backbone, schedule, m) and v.get("best_valid")
            )
            if not pts:
                continue
            means = [100 * statistics.fmean(p[1]) for p in pts]
            errs = [100 * statistics.stdev(p[1]) if len(p[1]) > 1 else 0.0 for p in pts]
            ax.errorbar([p[0] for p in pts], means, yerr=errs, capsize=3, label=m, **style[m])
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([k[4] for k in summary if k[:3] == (dataset, backbone, schedule)])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("conflict ratio (%)")
        ax.set_ylabel(f"test {HEADLINE.get(dataset, 'accuracy')} (%), best-on-valid iterate")
        ax.set_title(f"{dataset} {backbone} ({schedule})")
        ax.legend(fontsize=7, loc="upper left")
    _save(plt, fig, os.path.join(out, "headline.png"))

    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (dataset, backbone, schedule) in zip(axes[0], groups):
        for m in (
            "dcwp-official",
            "dcwp-clean",
            "dcwp-structured",
            "dcwp-structured-local",
            "mrm",
            "magnitude",
            "random",
            "erm",
        ):
            pts = [
                (100 * statistics.fmean(v["sparsity"]), 100 * statistics.fmean(v["test"]))
                for k, v in summary.items()
                if k[:4] == (dataset, backbone, schedule, m)
            ]
            if pts:
                ax.scatter(*zip(*pts), label=m, s=18, **style[m])
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(f"test {HEADLINE.get(dataset, 'accuracy')} (%)")
        ax.set_title(f"{dataset} {backbone}: one point per ratio")
        ax.legend(fontsize=7)
    _save(plt, fig, os.path.join(out, "methods_vs_sparsity.png"))
    _sweep_plot(summary, groups, out)


def _sweep_plot(summary: Dict[tuple, Any], groups: List[tuple], out: str) -> None:
    """``accuracy_vs_sparsity.png``: one panel per backbone and conflict ratio, test accuracy against the total
    sparsity each ranking (DCWP's scores, magnitude, random) was pruned to before DCWP's stage 4; DCWP's own run
    (its sparsity) and ERM marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.methods import SWEEP_KINDS, SWEEP_SPARSITIES, sweep_name

    panels = sorted({(k[0], k[1], k[2], k[4]) for k in summary if k[3].startswith("sweep-") and k[:3] in groups})
    if not panels:
        return
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = {"scores": "#1f77b4", "magnitude": "#ff7f0e", "random": "#7f7f7f"}
    for ax, (dataset, backbone, schedule, ratio) in zip(axes.flat, panels):
        for kind in SWEEP_KINDS:
            pts = []
            for s in SWEEP_SPARSITIES:
                c = summary.get((dataset, backbone, schedule, sweep_name(kind, s, False), ratio))
                if c:
                    vals = [100 * v for v in c["test"]]
                    pts.append((100 * s, statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0))
            if pts:
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, capsize=3, marker="o", color=colors[kind], label=f"{kind} + DCWP stage 4")
        base = summary.get((dataset, backbone, schedule, "dcwp-official", ratio))
        if base:
            ax.scatter(
                [100 * statistics.fmean(base["sparsity"])],
                [100 * statistics.fmean(base["test"])],
                marker="*",
                s=120,
                color="#d62728",
                zorder=5,
                label="DCWP (official run)",
            )
        erm = summary.get((dataset, backbone, schedule, "erm", ratio))
        if erm:
            ax.axhline(100 * statistics.fmean(erm["test"]), color="black", linestyle=":", linewidth=1, label="ERM")
        ax.set_title(f"{backbone}, {ratio:g} % conflicting", fontsize=9)
        ax.set_xlabel("total sparsity of the scored weights (%)")
        ax.set_ylabel(f"test {HEADLINE.get(dataset, 'accuracy')} (%)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _save(plt, fig, os.path.join(out, "accuracy_vs_sparsity.png"))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
#: The README's one table and plot: the baselines and peers against DCWP, each at its best-on-valid iterate.
HEADLINE_METHODS = ("erm", "lff", "jtt", "lc", "denetdm", "dcwp-official", "dcwp-plus")


def readme_block(table_md: str) -> str:
    """``table.md`` as ``docs/benchmarks.md`` shows it: headings nested one level down, nothing else changed."""
    import re

    body = table_md.split("\n", 1)[1].lstrip("\n")  # the title line is the docs section's own
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 1) + " ", body, flags=re.M)


def headline_block(out: str, profile: Any) -> str:
    """The README's results table: :data:`HEADLINE_METHODS` at their best-on-valid iterate, per backbone."""
    path = os.path.join(out, "results.jsonl")
    records = [json.loads(line) for line in open(path)] if os.path.isfile(path) else []
    summary = summarise(records)
    lines = [
        f"Test accuracy (%) on `{profile.name}` ({profile.note}), mean ± std over {len(profile.seeds)} seeds; "
        "every method at its iterate that is best on the **valid** split (evaluated at DCWP's stage-4 cadence), "
        "so none selects under a rule the others were not allowed. `dcwp-plus` is this library's variant "
        "(`--variant plus`), `dcwp-official` the faithful reproduction; LC and DeNetDM are the strongest "
        "published peers, run in the same harness; sparsity: the mean over the method's runs. All rows, both "
        "iterates, the controls and the records of earlier schedules: "
        "[docs/benchmarks.md](docs/benchmarks.md).",
        "",
    ]
    from benchmarks.reproduce import schedule_label

    def current(backbone: str) -> str:  # the schedule the profile runs now (older schedules: docs/benchmarks.md)
        return schedule_label(profile.scale.get(backbone, 1.0)) if profile.quick else "paper"

    groups = sorted({k[:3] for k in summary if k[2] == current(k[1])})
    # the most complete group first (the one with the most best-on-valid records)
    groups.sort(key=lambda g: -sum(len(v.get("best_valid", [])) for k, v in summary.items() if k[:3] == g))
    for dataset, backbone, schedule in groups:
        ratios = sorted({k[4] for k in summary if k[:3] == (dataset, backbone, schedule)})
        rows = []
        for m in HEADLINE_METHODS:
            cells = [summary.get((dataset, backbone, schedule, m, r)) or {} for r in ratios]
            if not any(c.get("best_valid") for c in cells):
                continue
            sparsity = [v for c in cells for v in c.get("sparsity", [])]
            sp = f"{100 * statistics.fmean(sparsity):.0f} %" if sparsity else "-"
            rows.append(
                f"| {m} | "
                + " | ".join(
                    _fmt(c["best_valid"], expected=len(profile.seeds)) if c.get("best_valid") else "-" for c in cells
                )
                + f" | {sp} |"
            )
        if rows:
            lines += (
                [
                    f"**{dataset}, {BACKBONE_NAMES.get(backbone, backbone)}** (schedule: {schedule})",
                    "",
                    "| method | " + " | ".join(f"{r:g} %" for r in ratios) + " | sparsity |",
                    "|" + "---|" * (len(ratios) + 2),
                ]
                + rows
                + [""]
            )
    return "\n".join(lines).rstrip() + "\n"


def _replace_block(path: str, name: str, block: str) -> bool:
    import re

    with open(path) as f:
        old = f.read()
    pattern = re.compile(rf"(<!-- figures:{re.escape(name)} -->\n)(.*?)(<!-- /figures:{re.escape(name)} -->)", re.S)
    if not pattern.search(old):
        raise SystemExit(f"{os.path.relpath(path, ROOT)} has no <!-- figures:{name} --> block")
    new = pattern.sub(lambda m: m.group(1) + block + m.group(3), old)
    if new != old:
        from dcwp_prune._atomic import write_text

        write_text(path, new)
    return new != old


def rewrite_readme(profile: str, block: str, headline: Optional[str] = None) -> bool:
    """Replace ``docs/benchmarks.md``'s ``<!-- figures:bench-PROFILE -->`` block with ``block`` (and, given
    ``headline``, the README's ``<!-- figures:headline-PROFILE -->`` block); True if anything changed."""
    changed = _replace_block(DOCS, f"bench-{profile}", block)
    if headline is not None:
        changed = _replace_block(README, f"headline-{profile}", headline) or changed
    return changed
