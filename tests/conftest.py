"""Shared test helpers: run a numbered script the way a user would, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # so tests can `import common`


def run_script(script, *args, cwd=None, timeout=300, env=None):
    """Run `python <script> <args>` from the repository and return the CompletedProcess.

    The child gets MPLBACKEND=Agg (no window) and no network is ever needed: tests pass
    --fake-data or a folder of generated images.
    """
    child_env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO_DIR / script), *map(str, args)],
        cwd=cwd or REPO_DIR, env=child_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run():
    """The run_script function, as a fixture."""
    return run_script
