"""The supported Python range is stated once in pyproject.toml, told in the README, and enforced at start-up."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from config import MINIMUM_PYTHON, python_check

ROOT = Path(__file__).resolve().parent.parent.parent


def test_an_interpreter_below_the_range_stops_with_a_message_naming_it_and_the_range():
    with pytest.raises(SystemExit) as stopped:
        python_check((3, 10, 13, "final", 0), "/opt/python3.10/bin/python3")
    message = str(stopped.value)
    assert "needs Python 3.11 or newer" in message
    assert "/opt/python3.10/bin/python3 is Python 3.10.13" in message


@pytest.mark.parametrize("version", [(3, 11, 0, "final", 0), (3, 11, 2, "final", 0), (3, 13, 1, "final", 0)])
def test_every_release_in_the_range_starts(version):
    python_check(version, "/usr/bin/python3")


def test_manage_py_stops_before_django_loads_on_an_old_python():
    pretend_old = (
        "import runpy, sys; sys.version_info = (3, 10, 13, 'final', 0); sys.argv = ['manage.py', 'check']; "
        "runpy.run_path('manage.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", pretend_old], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "This platform needs Python 3.11 or newer" in result.stderr and "Traceback" not in result.stderr


def test_pyproject_and_readme_state_the_same_range_as_the_check():
    floor = "{}.{}".format(*MINIMUM_PYTHON)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={floor}"
    assert re.search(rf"Python {re.escape(floor)} or newer", (ROOT / "README.md").read_text())
