"""Without NNI: `nas` imports no nni module, and `--strategy nni-*` is a one-line exit-2 error naming the extra."""

from __future__ import annotations

import subprocess
import sys

# refuse every import of nni (and pytorch_lightning) in the child process, as if the extra were not installed
_BLOCK = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('nni', 'pytorch_lightning'):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None
sys.meta_path.insert(0, _Refuse())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], capture_output=True, text=True, timeout=120)


def test_missing_nni_is_a_one_line_exit_2_naming_the_extra(tmp_path):
    code = (f"from nas.cli import main; sys.exit(main(['search', '--strategy', 'nni-darts', "
            f"'--set', 'run.root={tmp_path}']))")
    res = _run(code)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "pip install 'nas-seg[nni]'" in lines[0] and "bash bootstrap.sh nni" in lines[0]
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.iterdir())


def test_nas_imports_no_nni_until_a_search_asks():
    code = ("import nas.cli, nas.nni_backend, nas.commands.search, nas.nni_backend.convert\n"
            "from nas.cli import build_parser; build_parser()\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('nni', 'pytorch_lightning')]\n")
    res = _run(code)
    assert res.returncode == 0, res.stderr
