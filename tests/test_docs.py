"""The documentation resolves: every numbered citation in the code has its heading in ``docs/``, and every
relative link in README.md and ``docs/*.md`` points to a file (and a heading) that exists.

Code comments and docstrings cite the reference behaviour as "§3.5" (``docs/reference.md``) and the
original's bugs as "bug 9.10" / "bug §9.14" / "§9.23" (``docs/differences.md``). A citation resolves
when some heading in ``docs/*.md`` starts with its number (``### §3.5 ...``, ``### 9.10 ...``).
"""
from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")

# "§3.5", "§ 7", "bug 9.10", "bug §9.14": group 1 or group 2 is the cited number.
CITATION = re.compile(r"§ ?(\d+(?:\.\d+)*)|bug ?§?(9\.\d+)")
# A heading that owns a number: "## §3 Data", "### §3.5 Training ...", "### 9.10 The flip ...".
NUMBERED_HEADING = re.compile(r"(?:bug\s+)?§?(\d+(?:\.\d+)*)(?=\s|$)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SKIP_DIRS = {".git", ".venv", ".venv-masks", "data", "logs", "__pycache__", "node_modules"}


def source_files(root: str, endings: tuple[str, ...] = (".py", ".sh")) -> list[str]:
    """Every file under ``root`` with one of ``endings``, outside environments, data and run outputs."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        out += [os.path.join(folder, f) for f in sorted(files) if f.endswith(endings)]
    return out


def citations(paths: list[str]) -> dict[str, list[str]]:
    """``{cited number: ["file:line", ...]}`` of every "§x.y" / "bug 9.x" in ``paths``."""
    found: dict[str, list[str]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                for m in CITATION.finditer(line):
                    found.setdefault(m.group(1) or m.group(2), []).append(f"{os.path.relpath(path, REPO)}:{lineno}")
    return found


def headings(path: str) -> list[str]:
    """The text of every Markdown heading of ``path``, fenced code blocks left out."""
    out, fenced = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
                out.append(m.group(1))
    return out


def heading_numbers(doc_paths: list[str]) -> set[str]:
    """The numbers that headings of ``doc_paths`` own ("§3.5 Training ..." -> "3.5")."""
    return {m.group(1) for p in doc_paths for h in headings(p) if (m := NUMBERED_HEADING.match(h))}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading).lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: str) -> set[str]:
    """Every anchor GitHub gives the headings of ``path`` (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for h in headings(path):
        s = slug(h)
        out.add(f"{s}-{seen[s]}" if s in seen else s)
        seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(md_path: str) -> list[str]:
    """Relative links of ``md_path`` whose file, or whose ``#anchor`` in a Markdown file, does not exist."""
    with open(md_path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)  # nor do code spans
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(md_path), file_part)) if file_part else md_path
        if not os.path.exists(path):
            broken.append(f"{target} (no file {os.path.relpath(path, REPO)})")
        elif anchor and path.endswith(".md") and anchor not in anchors(path):
            broken.append(f"{target} (no heading with anchor #{anchor} in {os.path.relpath(path, REPO)})")
    return broken


def doc_files() -> list[str]:
    """``docs/*.md``."""
    return sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))


def test_every_citation_in_the_code_has_a_heading_in_docs():
    cited = citations(source_files(REPO))
    assert cited, "no '§x.y' / 'bug 9.x' citation found: the pattern or the walk is broken"
    owned = heading_numbers(doc_files())
    missing = {n: where[:3] for n, where in sorted(cited.items()) if n not in owned}
    assert not missing, f"citations without a heading in docs/*.md (add '### §x.y ...' or '### 9.x ...'): {missing}"


def test_citations_in_the_docs_themselves_resolve():
    readme = os.path.join(REPO, "README.md")
    cited = citations([readme, *doc_files()])
    owned = heading_numbers(doc_files())
    assert not sorted(set(cited) - owned), {n: cited[n] for n in set(cited) - owned}


def test_relative_links_and_anchors_of_readme_and_docs_exist():
    broken = {os.path.relpath(p, REPO): b for p in [os.path.join(REPO, "README.md"), *doc_files()]
              if (b := broken_links(p))}
    assert not broken, broken


def test_the_checks_catch_a_missing_heading_and_a_broken_link(tmp_path):
    """The checks above are not vacuous: a removed heading and a dangling link are reported."""
    (tmp_path / "code.py").write_text("# the reference flips masks as it does (bug 9.10); see §3.5\n")
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "reference.md"
    doc.write_text("# Notes\n\n### §3.5 Training transforms\n\n```\n### 9.10 inside a code block\n```\n"
                   "[ok](#35-training-transforms) [gone](#910-the-flip) [file](missing.md)\n")
    cited = citations(source_files(str(tmp_path)))
    assert set(cited) == {"9.10", "3.5"}
    assert set(cited) - heading_numbers([str(doc)]) == {"9.10"}
    assert broken_links(str(doc)) == [
        "#910-the-flip (no heading with anchor #910-the-flip in "
        f"{os.path.relpath(str(doc), REPO)})",
        f"missing.md (no file {os.path.relpath(str(tmp_path / 'docs' / 'missing.md'), REPO)})",
    ]


def test_slug_follows_github():
    assert slug("§3.5 Training transform pipeline") == "35-training-transform-pipeline"
    assert slug("Market-1501 → Occluded-REID: the paper's second protocol") == \
        "market-1501--occluded-reid-the-papers-second-protocol"
    assert slug("One command: `TEST.WEIGHT`") == "one-command-testweight"
