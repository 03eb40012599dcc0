"""Every ```python block in docs/*.md runs, as a newcomer would paste it.

Each block runs alone in a fresh interpreter (``python -c CODE`` from the repository
root, with a timeout), so it must be complete: imports included. An HTML comment on
the line just before the fence changes what happens to the block:

- ``<!-- no-run -->``: skipped (only for blocks that need an outside service).
- ``<!-- pytest -->``: the block is a test file; it is written to a temporary
  ``test_*.py`` and run with pytest (the ``reactor_server`` fixture comes from the
  installed plugin, as in a user's project).

Blocks in other languages (```sh, ```text, ...) are not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
TIMEOUT = 60
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARK = re.compile(r"^\s*<!--\s*([\w-]+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its marker and its code."""

    path: Path
    line: int
    lang: str
    mark: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(DOCS)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order.

    A block opens with three or more backticks (or tildes) and a language, and closes
    with a fence of the same character at least as long; indentation before the
    opening fence is removed from every line of the block.
    """
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.group(1), match.group(2), match.group(3).lower()
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(prev)
        start = i + 1
        body: list[str] = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and stripped.strip(fence[0]) == "":
                break
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        blocks.append(
            Block(path, start, lang, mark.group(1) if mark else "", "\n".join(body) + "\n")
        )
        i += 1
    return blocks


def python_blocks() -> list[Block]:
    blocks = []
    for path in sorted(DOCS.rglob("*.md")):
        blocks += [b for b in extract_blocks(path) if b.lang in ("python", "py", "python3")]
    return blocks


BLOCKS = python_blocks()


def run(args: list[str], block: Block) -> subprocess.CompletedProcess[str]:
    """Run from the repository root, as the docs' commands are; fail clearly on a hang."""
    try:
        return subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{block.id} still ran after {TIMEOUT} s: a block that serves forever needs "
            "<!-- no-run --> before it, or a Server it stops itself"
        )


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_docs_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.mark == "no-run":
        pytest.skip("marked <!-- no-run --> (needs an outside service)")
    if block.mark == "pytest":
        test_file = tmp_path / f"test_{block.path.stem.replace('-', '_')}_{block.line}.py"
        test_file.write_text(block.code, encoding="utf-8")
        result = run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            block,
        )
    else:
        # ``python -c``: the repository root is the current directory and on sys.path,
        # as for a newcomer pasting the block into ``python`` there.
        result = run([sys.executable, "-c", block.code], block)
    assert result.returncode == 0, (
        f"{block.id} failed (exit {result.returncode})\n--- code ---\n{block.code}"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def test_the_block_extractor_reads_fences_marks_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Intro\n\n```python\nprint(1)\n```\n\n<!-- no-run -->\n```python\nimport x\n```\n\n"
        "- item\n\n    ```py\n    if True:\n        pass\n    ```\n\n````sh\n```\n````\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page)
    assert [(b.lang, b.mark, b.code) for b in blocks] == [
        ("python", "", "print(1)\n"),
        ("python", "no-run", "import x\n"),
        ("py", "", "if True:\n    pass\n"),
        ("sh", "", "```\n"),
    ]


def test_every_docs_page_is_in_the_site_navigation() -> None:
    """mkdocs.yml lists every page, and every page it lists exists (else --strict fails)."""
    nav = re.findall(r":\s*([\w./-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.M)
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(nav)) == sorted(set(nav) & set(pages)), (
        f"in the nav but missing: {sorted(set(nav) - set(pages))}"
    )
    assert set(pages) <= set(nav), f"pages not in the nav: {sorted(set(pages) - set(nav))}"
