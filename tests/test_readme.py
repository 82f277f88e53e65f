"""The README stays a five-minute read (issue #31): under its size limit, every relative link in it
and in docs/ points to a file that exists, and it still shows the test command CI runs."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_LIMIT = 15_000  # characters

# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>\n]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\n\s*\n).)*?\1", re.S)  # within one paragraph
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets outside code blocks and code spans, less any #fragment; external links and
    pure #anchors are left out."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = []
    for bracketed, bare in LINK.findall(prose):
        target = bracketed or bare
        if SCHEME.match(target) or target.startswith("#"):
            continue
        targets.append(unquote(target.split("#", 1)[0]))
    return targets


def broken_links(md: Path, root: Path = REPO) -> list[str]:
    """Relative link targets of md that do not exist (a leading / means the repository root)."""
    broken = []
    for target in relative_links(md.read_text(encoding="utf-8")):
        base = root if target.startswith("/") else md.parent
        path = (base / target.lstrip("/")).resolve()
        if not path.is_relative_to(root.resolve()):
            broken.append(f"{target} (outside the repository)")
        elif not path.exists():
            broken.append(target)
    return broken


def test_readme_under_limit():
    size = len(README.read_text(encoding="utf-8"))
    assert size < README_LIMIT, (
        f"README.md has {size} characters (limit {README_LIMIT}): move details to docs/USAGE.md, "
        "measurements to docs/bench/<machine>/, training history to docs/TRAINING-NOTES.md")


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_exist(md: Path):
    assert broken_links(md) == [], f"{md.relative_to(REPO)} links to files that do not exist"


def test_link_finder_sees_what_it_must():
    text = ("[a](docs/x.md#part) ![b](img/p.png) [c](https://x.org/y) [d](#anchor) [m](mailto:a@b)\n"
            "`[e](in/code/span.md)`\n```\n[f](in/fence.md)\n```\n[g](<with space.md>) [h](p%20q.md \"t\")\n")
    assert relative_links(text) == ["docs/x.md", "img/p.png", "with space.md", "p q.md"]


def test_broken_link_is_reported(tmp_path):
    (tmp_path / "there.md").write_text("x")
    (tmp_path / "sub").mkdir()
    md = tmp_path / "sub" / "page.md"
    md.write_text("[ok](../there.md) [dir](.) [root](/there.md) [gone](missing.md#a)\n"
                  "[up](../../elsewhere.md)\n")
    assert broken_links(md, root=tmp_path) == ["missing.md", "../../elsewhere.md (outside the repository)"]


def test_readme_shows_the_ci_test_command():
    """CI (.ci/run) runs the README's test command: the README must still show it."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
                and not line.startswith(("set ", "cd ")) and "scripts/" in line]
    assert commands, ".ci/run runs no scripts/ command"
    readme = README.read_text(encoding="utf-8")
    fenced = "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", readme, re.S | re.M))
    code_lines = {line.split("#", 1)[0].strip() for line in fenced.splitlines()}
    for command in commands:
        assert command in code_lines, f"the README's code blocks no longer show `{command}`"
