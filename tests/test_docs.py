"""The documentation stays true to the code: the site builds strictly (no broken link, anchor or API
name), its CLI reference is the commands' own help, and the README is the short page it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pareco_commands() -> list[str]:
    """``pareco X [Y]`` for every visible command of the app, groups walked."""
    import typer

    from pareco_cli.app import app

    def walk(command, ctx, path):
        yield " ".join(path)
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    yield from walk(sub, sub.context_class(sub, info_name=name, parent=ctx), [*path, name])

    root = typer.main.get_command(app)
    return list(walk(root, root.context_class(root, info_name="pareco"), ["pareco"]))


def test_the_cli_reference_holds_every_command_and_its_help():
    page = _hooks().cli_reference()
    # pareco bench takes its subcommands itself (it also times points), so they are named here.
    for name in [*_pareco_commands(), "pareco bench lut", "pareco bench import"]:
        anchor = name.replace(" ", "-")
        assert f"[`{name}`](#{anchor})" in page, f"{name} missing from the summary table"
        assert re.search(rf"^#+ {name} \{{#{anchor}\}}$", page, re.M), f"{name} has no section"
        assert f"Usage: {name} " in page, f"{name}'s --help is missing"


def test_the_cli_reference_walks_subcommands_of_a_group():
    """A command split into subcommands (``pareco bench lut``) gets a section of its own."""
    import typer

    app = typer.Typer(rich_markup_mode=None)
    bench = typer.Typer(rich_markup_mode=None, help="Measure.")

    @app.command()
    def show() -> None:
        """Print the front."""

    @bench.command("lut")
    def lut() -> None:
        """Build a latency table | per block."""

    app.add_typer(bench, name="bench")
    page = _hooks().cli_reference(app)
    assert "| [`pareco bench lut`](#pareco-bench-lut) | Build a latency table \\| per block. |" in page
    assert "### pareco bench lut {#pareco-bench-lut}" in page
    assert "Usage: pareco bench lut [OPTIONS]" in page


def test_the_sphinx_roles_of_docstrings_become_code_spans():
    spec = importlib.util.spec_from_file_location("docs_griffe", ROOT / "scripts" / "docs_griffe.py")
    pytest.importorskip("griffe", reason="the docs packages come with the dev extra")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "See :func:`slice_model` and :class:`~pareco_runtime.front.FrontPoint`, :meth:`Front.save`."
    assert module.plain_roles(text) == "See `slice_model` and `FrontPoint`, `Front.save`."


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page outside the nav or an API name that
    does not resolve fails the build; the generated pages hold what they are generated from."""
    pytest.importorskip("mkdocs", reason="the docs packages come with the dev extra")
    pytest.importorskip("mkdocstrings", reason="the docs packages come with the dev extra")
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    got = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr[-4000:]
    cli = (site / "cli" / "index.html").read_text()
    for name in _pareco_commands():
        assert f'id="{name.replace(" ", "-")}"' in cli, name
    api = (site / "api" / "index.html").read_text()
    for name in ("build_model", "make_slimmable", "slice_model", "parse_budget", "SlimmableRuntime"):
        assert f'id="pareco_runtime.{name}"' in api, name
    assert '"$schema"' in (site / "file-formats" / "index.html").read_text()


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert len(text.splitlines()) <= 200


def test_the_readme_shows_the_four_commands_a_user_types():
    text = README.read_text()
    for command in ("pareco train --data", "pareco show", "pareco select --budget", "pareco export --budget"):
        assert command in text, command


def test_the_site_opens_with_the_readmes_description():
    """The README and the site's home page describe pareco in the same words: the first paragraph of
    one was left behind when a format was added to the other."""

    def opening(page: Path) -> str:
        paragraphs = page.read_text().split("\n\n")
        return " ".join(paragraphs[1].split())

    assert opening(ROOT / "docs" / "index.md") == opening(README)


@pytest.mark.parametrize("page", ["README.md", "CONTRIBUTING.md"])
def test_the_links_of_a_top_level_page_resolve_in_the_repository(page):
    """GitHub shows README.md and CONTRIBUTING.md from the repository: their relative links must
    name files that exist there."""
    broken = [
        target
        for target in _LINK.findall((ROOT / page).read_text())
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
        if not (ROOT / target.split("#")[0]).exists()
    ]
    assert not broken, broken


def test_no_page_cites_an_internal_issue_number():
    pages = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    cited = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in pages
        for m in re.finditer(r"\bissues? \d+\b|(?<![\w&/])#\d+\b", page.read_text(), re.I)
    ]
    assert not cited, cited


def test_the_readme_python_runs_as_printed(front_copy):
    """The README's Python block, pointed at a trained front, with ``x`` and ``image`` given."""
    import torch
    from PIL import Image

    from pareco_runtime import Front

    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    assert '"runs/demo/model.front.json"' in code.group(1)
    source = code.group(1).replace('"runs/demo/model.front.json"', repr(str(front_copy)))
    c, h, w = Front.load(front_copy).dataset.input_size
    scope = {"x": torch.rand(1, c, h, w), "image": Image.new("RGB", (w, h), (120, 60, 30))}
    exec(compile(source, "README.md", "exec"), scope)
    assert isinstance(scope["sub"], torch.nn.Module)
    assert scope["rt"].active.id == scope["rt"].select("battery=20%").id
