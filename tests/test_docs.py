"""The docs hold together: every relative link and anchor resolves, and every documented
``python -m ...`` command names a real module (and, for ``python -m hydralanet``, a real
subcommand and real options). Markdown only, no network, no torch: a few seconds."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "weights" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    return [f for f in files if f.is_file()]


DOCS = doc_files()

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), the target up to whitespace or ')', an optional "title"
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_SRC = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<[^>]*\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ...


def split_markdown(text: str) -> tuple[list[str], list[str]]:
    """``(prose lines, code blocks)``: fenced blocks (and a leading front matter) are code."""
    prose: list[str] = []
    blocks: list[str] = []
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter (model cards)
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        lines = lines[end + 1 :]
    fence: str | None = None
    current: list[str] = []
    for line in lines:
        match = FENCE.match(line)
        if fence is None and match:
            fence, current = match.group(1), []
        elif fence is not None and line.strip().startswith(fence):
            blocks.append("\n".join(current))
            fence = None
        elif fence is not None:
            current.append(line)
        else:
            prose.append(line)
    return prose, blocks


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation other than
    ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose:
        match = HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(path: Path) -> list[str]:
    """Every link target in the prose of ``path`` (inline code left out)."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    targets: list[str] = []
    for line in prose:
        line = INLINE_CODE.sub("", line)
        targets += MD_LINK.findall(line)
        targets += HTML_SRC.findall(line)
        ref = REF_LINK.match(line)
        if ref:
            targets.append(ref.group(1))
    return targets


def broken_links(path: Path) -> list[str]:
    problems: list[str] = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in destination.parents and destination != ROOT:
            problems.append(f"{target}: outside the repository")
        elif not destination.exists():
            problems.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{target}: no heading with anchor #{anchor} in {destination.relative_to(ROOT)}")
    return problems


def code_lines(path: Path) -> list[str]:
    """Shell lines from fenced blocks (backslash continuations joined) and inline code spans."""
    prose, blocks = split_markdown(path.read_text(encoding="utf-8"))
    lines: list[str] = []
    for block in blocks:
        lines += block.replace("\\\n", " ").splitlines()
    # inline code may wrap within a paragraph
    for paragraph in re.split(r"\n\s*\n", "\n".join(prose)):
        lines += [match.group(2) for match in INLINE_CODE.finditer(paragraph.replace("\n", " "))]
    return lines


PYTHON_M = re.compile(r"(?:python3?|torchrun)\b[^|;&#]*?\s-m\s+([A-Za-z_][\w.]*)")
SCRIPT = re.compile(r"(?:^|[\s(])(?:\S*/)?(?:python3?|bash)\s+((?:[\w.-]+/)+[\w.-]+\.(?:py|sh))\b")


def commands() -> list[tuple[str, str, str]]:
    """``(doc, module, the rest of the line)`` for every ``python -m MODULE ...`` in the docs."""
    found = []
    for path in DOCS:
        for line in code_lines(path):
            for match in PYTHON_M.finditer(line):
                found.append((str(path.relative_to(ROOT)), match.group(1), line[match.end() :]))
    return found


def scripts() -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(ROOT)), match.group(1))
        for path in DOCS
        for line in code_lines(path)
        for match in SCRIPT.finditer(line)
    ]


COMMANDS = commands()
HYDRALANET = [(doc, rest) for doc, module, rest in COMMANDS if module == "hydralanet"]
MODULES = sorted({(doc, module) for doc, module, _ in COMMANDS if module != "hydralanet"})


def arguments(rest: str) -> list[str]:
    """The words of a command line up to the first shell operator or comment."""
    try:
        words = shlex.split(rest, comments=True)
    except ValueError:  # an unbalanced quote in a placeholder
        words = rest.split()
    kept = []
    for word in words:
        if word in ("|", "||", "&&", ";", ">", ">>", "2>&1") or word.startswith("#"):
            break
        kept.append(word.strip("[]"))
    return kept


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_the_docs_and_their_commands_are_found():
    names = {str(p.relative_to(ROOT)) for p in DOCS}
    assert {"README.md", "weights/README.md", "docs/cli.md", "docs/architecture.md"} <= names
    assert len(HYDRALANET) >= 10 and len(MODULES) >= 15, (len(HYDRALANET), len(MODULES))
    # the extraction itself, on a made-up line
    line = ".venv/bin/torchrun --standalone -m hydralanet predict --list a.csv --out r/  # note"
    match = PYTHON_M.search(line)
    assert match.group(1) == "hydralanet"
    assert arguments(line[match.end() :]) == ["predict", "--list", "a.csv", "--out", "r/"]
    two = "python3 -m venv .venv && .venv/bin/python -m pytest -q"
    assert [m.group(1) for m in PYTHON_M.finditer(two)] == ["venv", "pytest"]
    assert (
        github_slug("Runtimes side by side: PyTorch, ONNX Runtime, int8")
        == "runtimes-side-by-side-pytorch-onnx-runtime-int8"
    )
    assert github_slug("The bundled model's `test` results") == "the-bundled-models-test-results"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    assert broken_links(path) == []


@pytest.mark.parametrize(("doc", "rest"), HYDRALANET, ids=[f"{d}: hydralanet{r[:60]}" for d, r in HYDRALANET])
def test_hydralanet_commands_parse(doc: str, rest: str):
    from hydralanet.cli import build_parser, main

    parser = build_parser()
    words = arguments(rest)
    if not words:  # the program named in prose, as in "`python -m hydralanet` has three subcommands"
        return
    first = words[0]
    if first.startswith("-"):
        assert first in option_strings(parser), f"{doc}: {first} is not an option of python -m hydralanet"
        return
    subs = subcommands(parser)
    assert first in subs, f"{doc}: {first!r} is not a subcommand (known: {', '.join(subs)})"
    with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit) as exit_:
        main([first, "--help"])
    assert exit_.value.code == 0 and "usage:" in out.getvalue()
    known = option_strings(subs[first])
    unknown = [w.split("=")[0] for w in words[1:] if w.startswith("--") and w.split("=")[0] not in known]
    assert unknown == [], f"{doc}: python -m hydralanet {first} has no option {', '.join(unknown)}"


def _find_spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package that does not exist
        return None


@pytest.mark.parametrize(("doc", "module"), MODULES, ids=[f"{d}: {m}" for d, m in MODULES])
def test_python_m_modules_exist(doc: str, module: str):
    assert _find_spec(module) is not None, f"{doc}: python -m {module}: no such module"


@pytest.mark.parametrize(("doc", "script"), sorted(set(scripts())))
def test_scripts_exist(doc: str, script: str):
    assert (ROOT / script).is_file(), f"{doc}: {script}: no such file"
