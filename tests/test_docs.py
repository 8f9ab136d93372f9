"""Every code block of README.md and docs/*.md runs here, or is marked why it cannot and is at least parsed.

- ``python`` blocks run in page order in one namespace per page (as a reader would paste them), in a
  scratch folder that holds ``run/scores.safetensors`` for resnet18; a block preceded by
  ``<!-- not run: REASON -->`` is only compiled.
- ``toml`` blocks are read into a ``RunConfig`` (every key and type checked).
- ``bash`` blocks: every ``dcwp-prune`` command (also after ``torchrun ... -m dcwp_prune``) is parsed by
  the CLI itself (commands, options, types and choices; nothing runs), ``python -m benchmarks.reproduce``
  by its parser, and the scripts they name must exist.
- Links between the pages point to files that exist; no page cites a path outside the repository.
"""

import ast
import glob
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")


def blocks(page):
    """``[(lang, code, reason_not_run, line)]`` of a page's fenced blocks."""
    text = open(os.path.join(ROOT, page)).read()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        marker = NOT_RUN.search(before[-1]) if before else None
        out.append((m.group(1), m.group(2), marker.group(1) if marker else None, text[: m.start()].count("\n") + 1))
    return out


def test_the_pages_have_code_and_the_readme_is_a_landing_page():
    assert len(PAGES) >= 7 and sum(len(blocks(p)) for p in PAGES) >= 15
    assert len(open(os.path.join(ROOT, "README.md")).read().splitlines()) <= 250


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder with ``run/scores.safetensors`` (resnet18, 10 classes) and an importable ``my_models``."""
    import torchvision

    from dcwp_prune import MaskScores

    tmp = tmp_path_factory.mktemp("docs")
    os.makedirs(tmp / "run")
    MaskScores.from_model(torchvision.models.resnet18(num_classes=10)).save(str(tmp / "run" / "scores.safetensors"))
    (tmp / "my_models.py").write_text("# a module of the user's that would register models\n")
    return tmp


_RAN = {}  # code -> namespace after it ran: a block repeated on two pages runs once


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    namespace = {"__name__": "__docs__"}
    for lang, code, reason, line in blocks(page):
        if lang != "python":
            continue
        compile(code, f"{page}:{line}", "exec")
        if reason:
            assert len(reason) > 10, f"{page}:{line}: say why the block cannot run"
            continue
        if code in _RAN:
            namespace.update(_RAN[code])
            continue
        exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102 (our own documentation)
        _RAN[code] = dict(namespace)


@pytest.mark.parametrize("page", PAGES)
def test_toml_blocks_are_valid_run_configs(page):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from dcwp_prune.run.config import RunConfig

    for lang, code, _, _line in blocks(page):
        if lang == "toml":
            RunConfig.from_dict(tomllib.loads(code))


def _commands(code):
    """The shell commands of a block: continuations joined, comments dropped, ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    for text in joined.splitlines():
        text = re.sub(r"\s+#.*$", "", text).strip()
        for part in filter(None, (p.strip() for p in text.split("&&"))):
            yield part


def _parse_cli(argv, scratch):
    import click

    from dcwp_prune.run.cli import main

    if any(flag in argv for flag in ("--help", "--version", "--list-models", "--list-datasets")):
        return  # eager flags that print and exit: checked by tests/test_cli.py
    import sys

    old, path, modules = os.getcwd(), list(sys.path), set(sys.modules)
    os.chdir(scratch)  # --import my_models finds the scratch module
    try:
        # the group's own rule: a known subcommand name selects it, anything else is ``run MODEL ...``
        name, args = (argv[0], argv[1:]) if argv and argv[0] in main.commands else ("run", list(argv))
        main.commands[name].make_context(name, list(args), parent=click.Context(main, info_name="dcwp-prune"))
    except click.exceptions.ClickException as err:
        raise AssertionError(f"dcwp-prune {shlex.join(argv)}: {err.format_message()}") from None
    finally:  # leave no trace for other tests: the scratch my_models is not the one they import
        os.chdir(old)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name == "my_models" or name.startswith("my_models."):
                del sys.modules[name]


@pytest.mark.parametrize("page", PAGES)
def test_shell_commands_parse(page, scratch):
    from benchmarks.reproduce import build_parser

    for lang, code, _, line in blocks(page):
        if lang not in ("bash", "sh", "shell"):
            continue
        for command in _commands(code):
            if " / " in command:  # "dcwp-prune --list-models / --version / --help": alternatives, not one line
                continue
            argv = shlex.split(command)
            if argv[0] == "torchrun":
                argv = argv[argv.index("-m") + 2 :] if argv[argv.index("-m") + 1] == "dcwp_prune" else []
                _parse_cli(argv, scratch)
            elif argv[0] == "dcwp-prune":
                _parse_cli(argv[1:], scratch)
            elif argv[:3] == ["python", "-m", "benchmarks.reproduce"]:
                try:
                    build_parser().parse_args(argv[3:])
                except SystemExit as err:
                    raise AssertionError(f"{page}:{line}: {command}") from err
            elif argv[0] in ("bash", "python") and len(argv) > 1 and argv[1].endswith((".sh", ".py")):
                assert os.path.isfile(os.path.join(ROOT, argv[1])), f"{page}:{line}: {argv[1]} does not exist"


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve_and_nothing_points_outside_the_repository(page):
    text = open(os.path.join(ROOT, page)).read()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target))
        assert path.startswith(ROOT) and os.path.exists(path), f"{page}: broken link {target}"


def test_no_source_file_cites_a_path_outside_the_repository():
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        if "/.venv/" in path or "/build/" in path:
            continue
        with open(path) as f:
            assert "../shared" not in f.read() or path.endswith("test_docs.py"), path


def test_python_blocks_parse():
    for page in PAGES:
        for lang, code, _, line in blocks(page):
            if lang == "python":
                ast.parse(code, f"{page}:{line}")
