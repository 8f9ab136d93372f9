"""Reproduce the paper's tables: one runner over dataset x conflict ratio x backbone x method x seed.

Usage::

    python -m benchmarks.reproduce --profile cpu-quick                    # hours on 2 CPU cores (README: Results)
    python -m benchmarks.reproduce --profile cpu-quick --methods dcwp-official erm --seeds 0
    python -m benchmarks.reproduce --profile gpu-paper --data-root ~/data --mnist-root ~/mnist
    python -m benchmarks.reproduce --profile cpu-quick --render            # rebuild table.md and plots only
    python -m benchmarks.reproduce --profile cpu-quick --executor ray --threads 1   # one Ray task per cell

Each cell is one run folder (``OUT/runs/<dataset>-<ratio>pct-<backbone>-seed<k>/<method>``) and one JSON
line in ``OUT/results.jsonl``: dataset, ratio, backbone, method, seed, schedule, selection rule,
valid / test metrics (pooled = the CMNIST / CIFAR10-C "unbiased" number, aligned, conflicting, worst
group), Colored MNIST's balanced all-colours test view, sparsity, MACs, wall time, git commit.
Re-running skips finished cells and retries failed ones; a failed cell is recorded with its error
and the grid goes on. ``OUT`` defaults to ``benchmarks/results/<profile>``; at the end (and with
``--render``) ``table.md`` and the plots are rebuilt from ``results.jsonl`` by ``benchmarks.table``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        # the results the grid itself appends to are not a change of the code that produced them
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def cell_key(cell: Dict[str, Any], schedule: str) -> tuple:
    return (cell["dataset"], float(cell["ratio"]), cell["backbone"], cell["method"], int(cell["seed"]), schedule)


def read_results(path: str) -> List[Dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


#: Methods that train from scratch and use nothing of the group's dcwp-official run.
OWN_TRAINING = ("lff", "jtt", "lc", "denetdm")

#: The stages a profile can scale: f_D's schedule (also LfF's and JTT's final model), f_B's (also JTT's
#: identification model), mask learning, fine-tuning.
STAGES = ("f_d", "f_b", "mask", "finetune")


def stage_scales(scale: Any) -> Dict[str, float]:
    """``{stage: factor}`` from a profile's per-backbone scale: one number for every stage, or a dict."""
    if isinstance(scale, dict):
        unknown = set(scale) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)} in a profile scale; use {STAGES}")
        return {k: float(scale.get(k, 1.0)) for k in STAGES}
    return {k: float(scale) for k in STAGES}


def schedule_label(scale: Any) -> str:
    """``quick``, ``quick x0.1`` (every stage) or ``quick, f_d x0.25`` (the scaled stages named)."""
    factors = stage_scales(scale)
    if len(set(factors.values())) == 1:
        f = factors["f_d"]
        return "quick" if f == 1.0 else f"quick x{f:g}"
    return "quick, " + ", ".join(f"{k} x{v:g}" for k, v in factors.items() if v != 1.0)


def schedule_slug(label: str) -> str:
    """A folder-name slug of a schedule label: ``""`` for ``quick`` and ``paper``, ``fdx0.25`` for ``quick, f_d x0.25``,
    ``x0.1`` for ``quick x0.1``."""
    if label in ("quick", "paper"):
        return ""
    parts = label.replace("quick", "").replace(",", " ").split()
    return "-".join(p.replace("_", "") for p in " ".join(parts).replace(" x", "x").split())


def _scaled(config: Any, scale: Any) -> Any:
    """The (already derived) schedule of ``config`` with each stage's iterations times its factor."""
    f = stage_scales(scale)

    def s(v: Optional[int], stage: str) -> Optional[int]:
        return None if v is None else max(1, int(round(v * f[stage])))

    b, m, ft = config.biased, config.mask, config.finetune
    return config.replace(
        biased=b.replace(
            iterations=s(b.iterations, "f_d"),
            lr_decay_step=s(b.lr_decay_step, "f_d"),
            biased_iterations=s(b.biased_iterations, "f_b"),
            biased_lr_decay_step=s(b.biased_lr_decay_step, "f_b"),
        ),
        mask=m.replace(iterations=s(m.iterations, "mask"), eval_every=s(m.eval_every, "mask")),
        finetune=ft.replace(
            iterations=s(ft.iterations, "finetune"),
            eval_every=s(ft.eval_every, "finetune"),
            lr_decay_step=max(ft.lr_decay_step, s(ft.iterations, "finetune")),
        ),
        checkpoint_every=s(config.checkpoint_every, "mask"),
        quick=False,
    )


class Runner:
    def __init__(self, profile: Any, out: str, args: argparse.Namespace) -> None:
        self.profile, self.out, self.args = profile, out, args
        self.results_path = os.path.join(out, "results.jsonl")
        self.commit = git_commit()
        self._n_train: Dict[tuple, int] = {}

    # ------------------------------------------------------------------------------ configs
    def schedule_name(self, backbone: str) -> str:
        if not self.profile.quick:
            return "paper"
        return schedule_label(self.profile.scale.get(backbone, 1.0))

    def config(self, cell: Dict[str, Any], run_dir: str, overrides: Dict[str, Any], derive: bool = False) -> Any:
        """The cell's RunConfig; its ``--quick`` schedule derived here where the profile scales it, a method changes
        it, or ``derive`` asks (so two configs compare stage for stage)."""
        from benchmarks.methods import SCHEDULE_OVERRIDES
        from dcwp_prune.run.presets import build_config, merge_options, quick_schedule

        data: Dict[str, Any] = {"name": cell["dataset"], "ratio": cell["ratio"]}
        if self.args.data_root and cell["dataset"] != "cmnist":
            data["root"] = self.args.data_root
        if cell["dataset"] == "cmnist" and self.args.mnist_root:  # full MNIST when it is there (labelled in info)
            data.update(mnist_root=self.args.mnist_root, source="auto")
        base = merge_options(
            self.profile.overrides.get(cell["dataset"], {}),
            {
                "model": cell["backbone"],
                "data": data,
                "seed": cell["seed"],
                "out": run_dir,
                "progress": False,
                "device": self.args.device or self.profile.device,
                "amp": self.profile.amp,
                "quick": self.profile.quick,
            },
        )
        config = build_config(cell["dataset"], merge_options(base, overrides))
        scale = self.profile.scale.get(cell["backbone"], 1.0)
        late = SCHEDULE_OVERRIDES.get(cell["method"])
        if self.profile.quick and (derive or schedule_label(scale) != "quick" or late):
            # derive the schedule here (the run then takes it as given): it is scaled, or a method changes it
            config = _scaled(quick_schedule(config, self.n_train(config)), scale)
        for stage, fields in (late or {}).items():
            part = getattr(config, stage)
            config = config.replace(**{stage: part.replace(**{k: f(getattr(part, k)) for k, f in fields.items()})})
        return config

    def n_train(self, config: Any) -> int:
        key = (config.data.name, config.data.ratio, config.data.source, config.data.root, config.seed)
        if key not in self._n_train:
            from dcwp_prune.run.pipeline import load_run_data

            self._n_train[key] = len(load_run_data(config, "train").train)
        return self._n_train[key]

    # ------------------------------------------------------------------------------ one cell
    def group_dir(self, cell: Dict[str, Any]) -> str:
        """``OUT/runs/<dataset>-<ratio>pct-<backbone>-seed<k>``, plus the schedule's slug where the profile scales
        the backbone's stages (``...-seed0-fdx0.25``): a change of schedule never resumes another schedule's runs."""
        slug = schedule_slug(self.schedule_name(cell["backbone"]))
        name = f"{cell['dataset']}-{cell['ratio']:g}pct-{cell['backbone']}-seed{cell['seed']}"
        return os.path.join(self.out, "runs", name + (f"-{slug}" if slug else ""))

    def ensure_base(self, cell: Dict[str, Any]) -> None:
        """The group's dcwp-official run folder, rebuilt (deterministically, not recorded again) when its cell is
        recorded but the folder is gone: run folders are not committed, so a fresh clone has none."""
        base = os.path.join(self.group_dir(cell), "dcwp-official")
        if not os.path.isfile(os.path.join(base, "results.json")):
            print(
                f"rebuilding the group's dcwp-official run {os.path.relpath(base, self.out)} (its folder is missing)",
                file=sys.stderr,
                flush=True,
            )
            self.run_cell({**cell, "method": "dcwp-official"})

    #: Runs of a group whose finished stage 1 another DCWP cell may start from, in the order they are tried.
    STAGE1_DONORS = ("dcwp-official", "dcwp-plus")

    def stage1_source(self, cell: Dict[str, Any]) -> Optional[str]:
        """The run folder a DCWP cell takes its stage 1 from (``stage1_from``), or None where it trains its own.

        dcwp-official trains its own; any other cell starts from the group's dcwp-official run when its stage 1
        would be the same (its :func:`~dcwp_prune.run.pipeline.stage1_key`), else from the group's dcwp-plus run
        when it matches that one and that run's stage 1 is finished (dcwp-plus-shuffle: DCWP+'s longer f_B), else
        trains its own ([biased] options, bf16 on the CPU, ...). Reusing a stage 1 gives the same numbers as
        training it (tested), so this only saves time."""
        from benchmarks.methods import DCWP_CONFIGS
        from dcwp_prune.run.pipeline import stage1_key

        if cell["method"] == "dcwp-official":
            return None
        own = stage1_key(self.config(cell, "unused", dict(DCWP_CONFIGS[cell["method"]]), derive=True))
        for donor in self.STAGE1_DONORS:
            if donor == cell["method"]:
                continue
            folder = os.path.join(self.group_dir(cell), donor)
            donor_config = self.config({**cell, "method": donor}, "unused", dict(DCWP_CONFIGS[donor]), derive=True)
            if stage1_key(donor_config) != own:
                continue
            if donor == "dcwp-official" or os.path.isfile(os.path.join(folder, "checkpoints", "stage1_biased.pt")):
                return folder
        return None

    def run_cell(self, cell: Dict[str, Any]) -> Dict[str, Any]:
        from benchmarks.methods import DCWP_CONFIGS, run_baseline
        from dcwp_prune.run.pipeline import run_dcwp

        group = self.group_dir(cell)
        run_dir = os.path.join(group, cell["method"])
        base = os.path.join(group, "dcwp-official")
        start = time.perf_counter()
        if cell["method"] != "dcwp-official" and cell["method"] not in OWN_TRAINING:
            self.ensure_base(cell)
        if cell["method"] in DCWP_CONFIGS:
            overrides = dict(DCWP_CONFIGS[cell["method"]])
            source = self.stage1_source(cell)
            if source is not None:
                overrides["stage1_from"] = source
            config = self.config(cell, run_dir, overrides)
            resume = os.path.isfile(os.path.join(run_dir, "config.json"))
            if not resume and os.path.isdir(run_dir):  # an attempt that failed before its first checkpoint
                shutil.rmtree(run_dir)
            result = run_dcwp(config.replace(resume=resume), report=False).to_dict()
            selected = "dcwp_best_valid" if result["selected"] == "best_valid" else "dcwp_last"
            metrics = result["metrics"][selected]
            both = (result["metrics"]["dcwp_last"], result["metrics"].get("dcwp_best_valid"))
            info = {
                "selection": result["selected"],
                "variant": config.variant,
                "sparsity": result["sparsity"],
                "kept": result.get("kept"),
                "mined": {k: result["mined"].get(k) for k in ("count", "precision", "recall")},
                "vanilla": result["metrics"]["vanilla"],
            }
            if result.get("structured"):
                info["structured"] = {k: result["structured"][k] for k in ("macs_ratio", "pruning_ratio")}
        else:
            config = self.config(cell, run_dir, {})
            result = run_baseline(cell["method"], config, run_dir, base)
            metrics = result["metrics"]["last"]
            both = (metrics, result["metrics"].get("best_valid"))
            info = {
                "selection": "last",
                "variant": None,
                "sparsity": result.get("sparsity", 0.0),
                "mined": result.get("mined"),
                "kept": result.get("kept"),
                "sweep": result.get("sweep"),
            }
            if result.get("structured"):
                info["structured"] = result["structured"]
        wall = time.perf_counter() - start
        last, best = both
        # both iterates of every method, whichever one its own rule selects (the table shows both, labelled)
        info["last"] = {"valid": _groups(last["valid"]), "test": _groups(last["test"])}
        if best is not None:
            info["best_valid"] = {
                "valid": _groups(best["valid"]),
                "test": _groups(best["test"]),
                "iteration": best.get("iteration"),
            }
        return {
            **info,
            "valid": _groups(metrics["valid"]),
            "test": _groups(metrics["test"]),
            **self.extra_metrics(cell, run_dir, config),
            "wall_s": round(wall, 1),
            "run_dir": os.path.relpath(run_dir, self.out),
        }

    def extra_metrics(self, cell: Dict[str, Any], run_dir: str, config: Any) -> Dict[str, Any]:
        """MACs of the saved model and, on Colored MNIST, the balanced all-colours test view."""
        import torch

        from dcwp_prune.adapters.structured import count_macs_params
        from dcwp_prune.data import default_transform, generate_cmnist
        from dcwp_prune.run.export import load_pruned_model
        from dcwp_prune.training.engine import Runtime, make_loader, resolve_device
        from dcwp_prune.training.evaluate import evaluate

        model = load_pruned_model(run_dir).eval()
        with open(os.path.join(run_dir, "model.json")) as f:
            shape = json.load(f)["input_shape"]
        macs, params = count_macs_params(model, torch.zeros(1, *shape))
        out: Dict[str, Any] = {"macs": macs, "params": params}
        d = config.data
        if cell["dataset"] == "cmnist" and d.root is None:
            view = generate_cmnist(
                "test",
                d.ratio,
                d.source,
                d.mnist_root,
                seed=config.seed,
                all_colors=True,
                transform=default_transform("cmnist", "test", d.image_size),
            )
            rt = Runtime(device=resolve_device(config.device))
            loader = make_loader(view, batch_size=d.eval_batch_size, device=rt.device)
            out["test_all_colors"] = _groups(evaluate(model.to(rt.device), loader, view.num_classes, rt))
        return out

    # ------------------------------------------------------------------------------ the grid
    def todo(self, cells: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The cells of ``cells`` that ``results.jsonl`` does not hold as finished (``ok``); with ``--redo-before T``
        also those whose latest finished record is older than ``T`` (or carries no time): a redo can be resumed."""
        before = getattr(self.args, "redo_before", None)
        done = {
            cell_key(r, r["schedule"])
            for r in read_results(self.results_path)
            if r.get("status") == "ok" and not (before and str(r.get("finished_at") or "") < before)
        }
        return [c for c in cells if cell_key(c, self.schedule_name(c["backbone"])) not in done]

    def redo(self, cell: Dict[str, Any]) -> bool:
        """Whether ``cell`` is re-run over a finished record (``--redo-before``): its run folder is made anew."""
        before = getattr(self.args, "redo_before", None)
        if not before:
            return False
        key = cell_key(cell, self.schedule_name(cell["backbone"]))
        return any(
            cell_key(r, r["schedule"]) == key and r.get("status") == "ok" for r in read_results(self.results_path)
        )

    def execute(self, cell: Dict[str, Any]) -> Dict[str, Any]:
        """Run one cell and return its ``results.jsonl`` record (``status`` ok or failed, never raises)."""
        import torch

        record: Dict[str, Any] = {
            **cell,
            "schedule": self.schedule_name(cell["backbone"]),
            "profile": self.profile.name,
            "commit": self.commit,
            "threads": torch.get_num_threads(),
            "cpu": torch.backends.cpu.get_cpu_capability(),
        }
        # CPU results are bit-reproducible at the same thread count on the same kind of CPU (summation order follows
        # the threads, and the kernels the instruction set: an AVX512 machine and an AVX2 one differ in the last bits)
        try:
            if self.redo(cell):
                shutil.rmtree(os.path.join(self.group_dir(cell), cell["method"]), ignore_errors=True)
            record.update(self.run_cell(cell), status="ok")
        except Exception as err:  # a failed cell is recorded, the grid goes on
            record.update(
                status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=6)
            )
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        return record

    def record(self, record: Dict[str, Any]) -> None:
        """Append one record to ``results.jsonl`` (only the driver writes it), under a file lock: two harness
        processes on disjoint cells of one results folder (``--backbones cnn`` beside ``--backbones mlp``) never
        interleave their lines."""
        from filelock import FileLock

        with FileLock(self.results_path + ".lock"), open(self.results_path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def run(self, cells: List[Dict[str, Any]], deadline: Optional[float] = None) -> int:
        os.makedirs(self.out, exist_ok=True)
        todo = self.todo(cells)
        print(
            f"{self.profile.name}: {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run "
            f"-> {self.out}",
            file=sys.stderr,
            flush=True,
        )
        failed, times = 0, []
        for k, cell in enumerate(todo):
            if deadline is not None and time.monotonic() > deadline:
                print(f"time budget reached: {len(todo) - k} cells left for a later run", file=sys.stderr, flush=True)
                break
            start = time.perf_counter()
            record = self.execute(cell)
            failed += record["status"] != "ok"
            took = time.perf_counter() - start
            times.append(took)
            self.record(record)
            eta = sum(times) / len(times) * (len(todo) - k - 1)
            print(
                f"[{k + 1}/{len(todo)}] {cell_label(record)} ({took:.0f} s; ETA {_hms(eta)})",
                file=sys.stderr,
                flush=True,
            )
        return failed


def cell_label(record: Dict[str, Any]) -> str:
    """``cmnist 1% mlp seed 0 erm: ok test 41.2%`` (or the error of a failed cell)."""
    test = (record.get("test") or {}).get("accuracy")
    shown = f"test {100 * test:.1f}%" if test is not None else record.get("error", "")[:120]
    return (
        f"{record['dataset']} {record['ratio']:g}% {record['backbone']} seed {record['seed']} {record['method']}: "
        f"{record['status']} {shown}"
    )


def _groups(metrics: Dict[str, Any]) -> Dict[str, Any]:
    keys = ("accuracy", "unbiased", "aligned", "conflicting", "conflicting_pooled", "worst_group")
    return {k: metrics.get(k) for k in keys}


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.reproduce``."""
    from benchmarks.profiles import PROFILES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument("--out", help="results folder (default benchmarks/results/PROFILE)")
    parser.add_argument("--data-root", help="folder holding the DisEnt releases (cifar10c/, bffhq/, cmnist/)")
    parser.add_argument("--mnist-root", help="torchvision MNIST folder: full MNIST for Colored MNIST")
    parser.add_argument("--methods", nargs="+", help="run only these methods (and ablations)")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--ratios", nargs="+", type=float)
    parser.add_argument("--backbones", nargs="+")
    parser.add_argument("--device", help="override the profile's device (cpu, cuda)")
    parser.add_argument("--budget-s", type=float, default=0, help="stop starting new cells after this many seconds")
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: one cell after another in this process; ray: one Ray task per cell (pip install -e '.[bench]')",
    )
    parser.add_argument(
        "--address", help="--executor ray: the Ray cluster to join (default: start Ray on this machine)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per cell (default: torch's own locally, 1 on Ray; a "
        "cell's numbers are bit-reproducible at one thread count); Ray reserves this many CPUs per "
        "CPU cell, and one GPU per cell on GPU profiles",
    )
    parser.add_argument(
        "--redo-before",
        metavar="UTC_TIME",
        help="also re-run the selected cells whose latest finished "
        "record is older than this UTC time (2026-12-03T18:00), e.g. after a change to what cells "
        "record; the older records stay in results.jsonl, the newest counts; resumable",
    )
    parser.add_argument("--render", action="store_true", help="only rebuild table.md and the plots")
    parser.add_argument(
        "--readme",
        action="store_true",
        help="also copy table.md into docs/benchmarks.md's results block and the headline table into the README's",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from benchmarks.profiles import PROFILES

    parser = build_parser()
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    out = args.out or os.path.join(ROOT, "benchmarks", "results", profile.name)
    if not args.render:
        problem = _check_selection(profile, args)
        if problem:
            parser.error(problem)  # exit 2 before any cell is run or recorded
        if args.threads is not None and args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        if args.address and args.executor != "ray":
            parser.error("--address names a Ray cluster: pass it with --executor ray")
        if args.executor == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                parser.error("--executor ray needs Ray: pip install -e '.[bench]' (or pip install 'ray>=2.9')")
    from benchmarks.table import render

    if not args.render:
        cells = profile.cells(args.methods, args.seeds, args.ratios, args.backbones)
        cells, skipped = _available(cells, args)
        for note in skipped:
            print(note, file=sys.stderr)
        deadline = time.monotonic() + args.budget_s if args.budget_s else None
        if args.executor == "ray":
            from benchmarks.ray_executor import run_on_ray

            run_on_ray(profile, out, args, cells, deadline=deadline)
        else:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            try:
                Runner(profile, out, args).run(cells, deadline=deadline)
            except KeyboardInterrupt:  # Ctrl-C (the engine's StopRequested is one): the running cell is not recorded
                print(
                    "\nstopped: the running cell was not recorded (a DCWP cell resumes from its checkpoint); run "
                    "the same command again to resume",
                    file=sys.stderr,
                )
                raise SystemExit(130) from None
    text = render(out, profile)
    print(f"table: {os.path.join(out, 'table.md')}", file=sys.stderr)
    if args.readme:
        from benchmarks.table import headline_block, readme_block, rewrite_readme

        rewrite_readme(profile.name, readme_block(text), headline_block(out, profile))
    return 0


def _check_selection(profile: Any, args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the command line's grid selection or device, or None.

    A name the profile does not have would select no cells (a typo ran nothing, silently), and a CUDA
    profile on a machine without CUDA would record every cell as failed.
    """
    import torch

    grid = profile.cells()
    given = {
        "--methods": (args.methods, {c["method"] for c in grid}),
        "--backbones": (args.backbones, {c["backbone"] for c in grid}),
        "--ratios": (args.ratios, {c["ratio"] for c in grid}),
    }  # any seed is a valid seed
    for flag, (values, known) in given.items():
        unknown = [v for v in values or () if v not in known]
        if unknown:
            names = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(known))
            return f"{flag} {' '.join(map(str, unknown))}: not in profile {profile.name!r} (it has: {names})"
    device = args.device or profile.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        return (
            f"profile {profile.name!r} runs on {device}, and this machine has no CUDA device: run it on a GPU "
            "machine, or pass --device cpu to run it here (the paper's schedules take days on a CPU), or use "
            "--profile cpu-quick"
        )
    return None


def _available(cells: List[Dict[str, Any]], args: argparse.Namespace) -> tuple:
    """Cells whose data is present; one note per skipped dataset naming where to put it."""
    from dcwp_prune.data import DatasetError, create_dataset

    keep, notes, absent = [], [], {}
    for cell in cells:
        name = cell["dataset"]
        if name == "cmnist":
            keep.append(cell)
            continue
        if name not in absent:
            try:
                create_dataset(name, root=args.data_root, split="test")
                absent[name] = None
            except (DatasetError, FileNotFoundError) as err:
                absent[name] = str(err).splitlines()[0]
                notes.append(f"skipping {name}: {absent[name]} (put the release under --data-root ROOT/{name}/)")
        if absent[name] is None:
            keep.append(cell)
    return keep, notes


if __name__ == "__main__":
    sys.exit(main())
