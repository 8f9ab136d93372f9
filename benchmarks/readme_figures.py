"""Regenerate the docs' measured run figures from the commands that produce them.

Each figure sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` markers in its page
and is rewritten here from a fresh run:

- ``mlp-report`` (``docs/command-line.md``): ``dcwp-prune mlp --data cmnist --quick`` -> its ``report.md``
  (latency table left out: it depends on the machine's load);
- ``cnn-summary`` (``docs/command-line.md``): ``dcwp-prune cnn --data cmnist --quick`` -> one sentence with
  its test accuracies;
- ``example`` (``docs/python-api.md``): ``python examples/debias_your_model.py`` -> one sentence with its
  printed figures.

Usage::

    python benchmarks/readme_figures.py                 # mlp report only (about 20 s on 2 cores)
    python benchmarks/readme_figures.py --all           # plus the cnn demo and the example (about 5 min)
    python benchmarks/readme_figures.py --check         # exit 1 if a page differs from a fresh run

The runs are deterministic on one machine (CPU, one process); a different CPU or torch build may
change the last digits, which ``--check`` then reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_PAGE = os.path.join(ROOT, "docs", "command-line.md")
API_PAGE = os.path.join(ROOT, "docs", "python-api.md")


def _run(cmd: List[str], cwd: str) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr, took


def _cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "dcwp_prune", *args]


def mlp_report(tmp: str) -> str:
    out = os.path.join(tmp, "mlp")
    _, took = _run(_cli("mlp", "--data", "cmnist", "--quick", "--out", out, "--no-progress"), tmp)
    print(f"mlp --quick: {took:.1f} s", file=sys.stderr)
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    text = text.split("\n| device | batch |")[0].rstrip() + "\n"  # the latency table depends on the machine's load
    text = re.sub(r"^#", "###", text, flags=re.M)  # nest under the page's "## A real report"
    return text


def cnn_summary(tmp: str) -> str:
    out = os.path.join(tmp, "cnn")
    _, took = _run(_cli("cnn", "--data", "cmnist", "--quick", "--out", out, "--no-progress"), tmp)
    print(f"cnn --quick: {took:.1f} s", file=sys.stderr)
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    m = r["metrics"]
    best = m.get("dcwp_best_valid")
    best_text = (
        f", {100 * best['test']['accuracy']:.1f} % for the best-on-valid iterate (it {best['iteration']})"
        if best
        else ""
    )
    return (
        f"The same command with `cnn` gave vanilla {100 * m['vanilla']['test']['accuracy']:.1f} % vs DCWP "
        f"{100 * m['dcwp_last']['test']['accuracy']:.1f} % test accuracy (last iterate){best_text}, mining precision "
        f"{100 * r['mined']['precision']:.1f} % / recall {100 * r['mined']['recall']:.1f} %, "
        f"{100 * r['sparsity']:.1f} % sparsity.\n"
    )


def example(tmp: str) -> str:
    text, took = _run([sys.executable, os.path.join(ROOT, "examples", "debias_your_model.py")], tmp)
    print(f"examples/debias_your_model.py: {took:.1f} s", file=sys.stderr)
    vanilla = re.search(r"vanilla\s+test accuracy ([\d.]+)", text)
    dcwp = re.search(r"DCWP\s+test accuracy ([\d.]+) at sparsity ([\d.]+)", text)
    if not (vanilla and dcwp):
        sys.exit(f"could not read the example's figures from its output:\n{text[-2000:]}")
    pct = lambda v: f"{100 * float(v):.1f} %"  # noqa: E731
    return (
        f"Measured here (32 px offline Colored MNIST at 1 %, 300 / 200 / 100 iterations): vanilla test accuracy "
        f"{pct(vanilla.group(1))}, DCWP {pct(dcwp.group(1))} at {pct(dcwp.group(2))} sparsity.\n"
    )


FIGURES: Dict[str, Tuple[Callable[[str], str], str]] = {
    "mlp-report": (mlp_report, CLI_PAGE),
    "cnn-summary": (cnn_summary, CLI_PAGE),
    "example": (example, API_PAGE),
}


def replace_block(page: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- figures:{name} -->\n)(.*?)(<!-- /figures:{name} -->)", re.S)
    if not pattern.search(page):
        sys.exit(f"no <!-- figures:{name} --> ... <!-- /figures:{name} --> block in its page")
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all", action="store_true", help="also the cnn demo and the example (about 5 minutes)")
    parser.add_argument("--check", action="store_true", help="compare with the pages instead of rewriting them")
    args = parser.parse_args()
    names = list(FIGURES) if args.all else ["mlp-report"]
    pages: Dict[str, Tuple[str, str]] = {}  # path -> (old, new)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            make, path = FIGURES[name]
            if path not in pages:
                with open(path) as f:
                    text = f.read()
                pages[path] = (text, text)
            old, new = pages[path]
            pages[path] = (old, replace_block(new, name, make(tmp)))
    stale = [p for p, (old, new) in pages.items() if new != old]
    if args.check:
        for p in stale:
            old, new = pages[p]
            sys.stdout.writelines(line + "\n" for line in _diff(old, new, os.path.relpath(p, ROOT)))
        if stale:
            sys.exit("figures differ from a fresh run (above); run benchmarks/readme_figures.py to update them")
        print("figures match a fresh run")
        return
    from dcwp_prune._atomic import write_text

    for p in stale:
        write_text(p, pages[p][1])
        print(f"{os.path.relpath(p, ROOT)} updated")
    if not stale:
        print("already up to date")


def _diff(old: str, new: str, name: str) -> List[str]:
    import difflib

    return list(difflib.unified_diff(old.splitlines(), new.splitlines(), name, "fresh run", lineterm=""))


if __name__ == "__main__":
    main()
