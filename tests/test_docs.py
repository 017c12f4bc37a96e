"""The documentation site: it builds with `mkdocs build --strict` (no broken link, every page in the nav, the CLI
reference generated from the app, the API reference from `parbench.api`'s docstrings), and every block a guide marks
runnable runs, on the synthetic data, so the guides cannot drift from the code.

A block is runnable when the line before its fence is `<!-- runnable -->` (invisible on the site); with
`<!-- runnable file=NAME -->` its text is written to NAME instead of run (a plugin file a later block uses). A
page's blocks run in order, in one fresh folder per page that holds `suites/` (the shipped suites): bash blocks
with `bash -euo pipefail`, python blocks with this interpreter. The README's quick start is checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARK = re.compile(r"^<!-- runnable(?: file=(\S+))? -->\n```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)


def runnable_blocks(page: Path) -> list[tuple[str | None, str, str]]:
    """(file name or None, language, code) of each block marked runnable, in page order."""
    return [(m.group(1), m.group(2), m.group(3)) for m in MARK.finditer(page.read_text())]


PAGES = sorted(p for p in DOCS.rglob("*.md") if runnable_blocks(p))


def test_the_pages_that_teach_by_example_have_runnable_blocks():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    for page in ("getting-started.md", "extending.md", "datasets/table.md", "export.md", "tracks/zero-shot.md"):
        assert page in names, page


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_runnable_blocks_run(page, tmp_path):
    (tmp_path / "suites").symlink_to(ROOT / "suites")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for i, (name, lang, code) in enumerate(runnable_blocks(page)):
        if name:
            (tmp_path / name).write_text(code)
            continue
        if lang in ("bash", "console", "sh"):
            cmd = ["bash", "-euo", "pipefail", "-c", code]
        elif lang == "python":
            cmd = [sys.executable, "-c", code]
        else:
            raise AssertionError(f"{page}: block {i} is marked runnable but is {lang}")
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{page} block {i}:\n{code}\n--- stderr:\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for command in ("parbench run", "parbench robust", "parbench suite", "--eval-on", "--set"):
        assert command in cli, command  # generated from the app: every command and option is there
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    import parbench.api

    for name in ("MethodSpec", "plain_method", "create_backbone", "sentences"):
        assert name in api and name in parbench.api.__all__


def test_the_readme_is_a_landing_page_under_8_kb():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 8 * 1024
    assert "make demo" in readme and "make test" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
