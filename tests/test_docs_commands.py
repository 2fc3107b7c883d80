"""Every `nas …` command written in README.md and docs/ parses with the real CLI: a subcommand renamed, a flag
dropped or a required argument missing in the documentation fails here (the README once showed `nas study
dashboard --port 8080`, which exits at once without the study NAME). Documentation notation is read as a user
would: `[optional parts]` are left out, `a|b` means a, and one-letter placeholders (N, K) are numbers."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nas.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(path: Path) -> list[str]:
    """`nas …` lines inside the fenced code blocks of `path`, comments and line continuations resolved."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|;", line):
                part = part.strip()
                m = re.match(r"^(?:\$ )?(?:\.venv/bin/)?nas (.*)$", part)
                if m:
                    out.append(m.group(1))
    return out


def _as_user_reads_it(args: str) -> list[str]:
    while re.search(r"\[[^\[\]]*\]", args):
        args = re.sub(r"\s*\[[^\[\]]*\]", "", args)
    tokens = []
    for tok in shlex.split(args):
        tok = tok.split("|")[0] if "|" in tok and not tok.startswith("--set") else tok
        tokens.append("1" if re.fullmatch(r"[A-Z]", tok) else tok)
    return tokens


CASES = [(p.relative_to(ROOT).as_posix(), c) for p in DOCS for c in _commands(p)]


def test_the_documentation_has_commands():
    assert len(CASES) >= 20


@pytest.mark.parametrize("where,command", CASES, ids=[f"{w}:{c[:40]}" for w, c in CASES])
def test_documented_command_parses(where, command, capsys):
    parser = build_parser()
    try:
        args = parser.parse_args(_as_user_reads_it(command))
    except SystemExit as exc:
        pytest.fail(f"{where}: `nas {command}` does not parse ({capsys.readouterr().err.strip().splitlines()[-1]})"
                    if exc.code else f"{where}: `nas {command}` only prints help")
    assert getattr(args, "func", None) is not None, f"{where}: `nas {command}` names no subcommand"
