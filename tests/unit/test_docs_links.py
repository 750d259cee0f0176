"""Every relative link in README.md and docs/**/*.md points at a file that exists, and every
``#anchor`` into a Markdown file names one of its headings.

The README links to the docs and the docs link to each other and to the plots; pages move
(issue 22 moved most of the README into docs/), and a link left behind fails silently on
GitHub. Anchors follow GitHub's rule for heading ids, so a renamed heading is caught too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
"""An inline Markdown link or image; group 1 is its target (one level of nested brackets)."""
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
"""http:, https:, mailto: ...: not checked here (no network in unit tests)."""


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md, the benchmarks' and the studies' READMEs and every Markdown file under docs/."""
    files = [root / name for name in ("README.md", "bench/README.md", "studies/README.md")
             if (root / name).exists()]
    return files + sorted((root / "docs").rglob("*.md"))


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", lambda m: " " * len(m.group()), line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's id for a heading: inline markup dropped, lower case, punctuation removed,
    spaces to hyphens (so "§5 Solve" is ``5-solve``, "50 × 10, x" is ``50--10-x``)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Heading ids of a Markdown file, with GitHub's -1, -2 suffixes for repeated ones."""
    seen: dict[str, int] = {}
    ids = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def broken_links(path: Path) -> list[str]:
    """Messages for the relative links of ``path`` whose file or anchor does not exist."""
    problems = []
    text = path.read_text(encoding="utf-8")
    for number, line in _prose_lines(text):
        for match in LINK.finditer(line):
            target = match.group(1)
            if EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}"
            if not dest.exists():
                problems.append(f"{where}: {target!r}: no such file {dest}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: {target!r}: no heading with id #{anchor} in {dest.name}")
    return problems


def test_readme_and_docs_have_no_broken_relative_links() -> None:
    files = doc_files()
    assert ROOT / "README.md" in files and len(files) > 1
    problems = [problem for path in files for problem in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("§5 Solve", "5-solve"),
        ("Memory plan (before you buy a GPU)", "memory-plan-before-you-buy-a-gpu"),
        ("50 batches × 10, targets on the edited model (replaced)",
         "50-batches--10-targets-on-the-edited-model-replaced"),
        ("The `evaluate` command", "the-evaluate-command"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_a_broken_file_link_and_a_broken_anchor_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Part one\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#part-one) [self](#top) [web](https://example.org/x.md)\n"
        "[gone](docs/missing.md) ![pic](docs/none.png) [bad anchor](docs/a.md#part-two)\n"
        "```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`\n\n# Top\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "missing.md" in problems[0] and "none.png" in problems[1]
    assert "#part-two" in problems[2]
    assert doc_files(tmp_path) == [page, tmp_path / "docs" / "a.md"]
