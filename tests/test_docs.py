"""The docs build as Read the Docs builds them: warnings are errors and every tutorial executes on CPU."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.docs  # ~10 min on 2 cores: its own step of .ci/run, not the default run
@pytest.mark.timeout(1500)
def test_docs_build_with_warnings_as_errors_and_tutorials_execute(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-b",
        "html",
        str(ROOT / "docs"),
        str(tmp_path / "html"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-8000:]
    html = tmp_path / "html"
    for page in ["index", "api", "method", "errors", "tutorials/quickstart", "tutorials/cross_scale"]:
        assert (html / f"{page}.html").stat().st_size > 0, page
    # An executed tutorial carries its outputs (a stored notebook has none).
    assert "PCC@M" in (html / "tutorials" / "cross_scale.html").read_text()
