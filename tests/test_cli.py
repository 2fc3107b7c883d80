"""The `nas` command itself: help, version, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from nas.cli import build_parser


def _nas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands():
    res = _nas("--help")
    assert res.returncode == 0
    for name in build_parser()._subparsers._group_actions[0].choices:  # noqa: SLF001
        assert name in res.stdout


def test_every_subcommand_has_help():
    for name in build_parser()._subparsers._group_actions[0].choices:  # noqa: SLF001
        res = _nas(name, "--help")
        assert res.returncode == 0, res.stderr


def test_unknown_subcommand_exits_2():
    res = _nas("frobnicate")
    assert res.returncode == 2


def test_bad_config_key_is_one_line_exit_2(tmp_path):
    res = _nas("data", "generate", "--set", "data.nope=1", "--set", f"data.root={tmp_path}")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "data.nope" in res.stderr
    assert "Traceback" not in res.stderr
