"""Every relative Markdown link in README.md and docs/*.md points at a file or folder that exists.

Collected: inline links and images ``[text](path)``, ``[text](path#anchor)``, ``![alt](path "title")`` and
reference definitions ``[ref]: path``. Skipped: URLs with a scheme (``http(s)://``, ``mailto:``, ...), pure
``#anchors``, and anything inside fenced code blocks or inline code spans. A path is resolved relative to the
file that holds the link (a leading ``/`` means the repository root); its ``#anchor`` and ``?query`` are
dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [p for p in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))) if p.is_file()]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title"): the text may hold one level of brackets; the target may be <...> or hold balanced
# parentheses
_INLINE = re.compile(
    r"!?\[(?P<text>(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]"
    r"\(\s*(?P<target><[^<>\n]*>|(?:[^\s()]|\([^\s()]*\))+)"
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?\s*\)"
)
_REFDEF = re.compile(r"^ {0,3}\[(?P<text>[^\]]+)\]:\s*(?P<target><[^<>\n]*>|\S+)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose_lines(text: str) -> list[str]:
    """The file's lines with fenced code blocks blanked and inline code spans masked by as many ``x`` (line
    numbers and columns kept, so a match's span can be read back from the original line)."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is not None:  # inside a block: a closing fence is the same character, as long, nothing after
            marker = m.group(1) if m else ""
            rest = line.strip()[len(marker):].strip()
            if marker[:1] == fence[0] and len(marker) >= len(fence) and not rest:
                fence = None
            out.append("")
            continue
        if m:
            fence = m.group(1)
            out.append("")
            continue
        out.append(_CODE_SPAN.sub(lambda c: "x" * len(c.group(0)), line))
    return out


def relative_links(path: Path) -> list[tuple[int, str, str]]:
    """(line number, link as written, target) of every relative link in the Markdown file `path`."""
    found = []
    original = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(_prose_lines("\n".join(original)), start=1):
        matches = list(_INLINE.finditer(line))
        ref = _REFDEF.match(line)
        if ref:
            matches.append(ref)
        for m in matches:
            target = m.group("target").strip()
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1].strip()
            if not target or target.startswith("#") or _SCHEME.match(target):
                continue
            found.append((number, original[number - 1][m.start():m.end()], target))
    return found


def resolve(source: Path, target: str) -> Path:
    """The file or folder `target` (as written in `source`) points at."""
    path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
    if path.startswith("/"):
        return ROOT / path.lstrip("/")
    return source.parent / path


def test_links_are_collected_and_resolved(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    (tmp_path / "a.md").write_text("x")
    doc.write_text(
        "[ok](../a.md) [anchor](../a.md#top) ![img](<../b c.png> \"t\")\n"
        "[web](https://x.org/y) [m](mailto:a@b.c)\n"
        "[self](#here) `[code](nope.md)` [t [n]](f(1).md)\n"
        "```\n[fenced](nope.md)\n```\n"
        "[ref]: ../missing.md\n",
        encoding="utf-8",
    )
    links = relative_links(doc)
    assert [(n, t) for n, _, t in links] == [(1, "../a.md"), (1, "../a.md#top"), (1, "../b c.png"),
                                             (3, "f(1).md"), (7, "../missing.md")]
    assert resolve(doc, "../a.md#top").resolve() == (tmp_path / "a.md").resolve()
    assert resolve(doc, "../b%20c.png").name == "b c.png"


def _shown(path: Path) -> str:
    path = path.resolve()
    return path.relative_to(ROOT.resolve()).as_posix() if path.is_relative_to(ROOT.resolve()) else str(path)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    broken = [f"  line {n}: {link} -> {_shown(resolve(path, target))} does not exist"
              for n, link, target in relative_links(path) if not resolve(path, target).exists()]
    assert not broken, f"{path.relative_to(ROOT)} has {len(broken)} broken link(s):\n" + "\n".join(broken)
