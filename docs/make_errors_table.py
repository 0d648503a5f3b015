"""Write the table of docs/errors.md by running every bad-input case of tests/test_errors.py.

    python docs/make_errors_table.py

Each row is the input, the exception raised and the first line of its message, as the user sees it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).parent
HEADER = """# Errors and what to do

Every mistake pixnet can recognise raises a `ValueError`, `KeyError` or `FileNotFoundError` whose
message names the problem and the fix; none surfaces as a traceback from inside h5py, xarray,
dask or torch. The command line prints the message and exits with code 2.

Each row below is a case of `tests/test_errors.py`, run on the test suite's small synthetic slide;
the message is the one that case raised (made by `python docs/make_errors_table.py`).

| area | input | error | message |
|---|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PIXNET_DATA"] = str(Path(tmp) / "data")
        sys.path.insert(0, str(HERE.parent / "tests"))
        import test_errors as te

        import pixnet

        slide = pixnet.datasets.visium_hd_demo(Path(tmp) / "small", size_um=320, seed=3, rotation_deg=2.0)
        model = te._fit(pixnet.io.visium_hd(slide, bin_sizes=(16,)))
        rows = []
        for i, (area, what, fn, exc, _) in enumerate(te.CASES):
            case_dir = Path(tmp) / f"case{i}"
            case_dir.mkdir()
            try:
                fn(te.Ctx(slide, case_dir, model))
                message, raised = "(no error: the test fails)", "-"
            except exc as err:
                raised = type(err).__name__
                message = (
                    f"exit code {err.code}" if isinstance(err, SystemExit) else str(err.args[0] if err.args else err)
                )
            message = message.replace(f"{case_dir}/", "").replace(f"{tmp}/", "")  # paths as the user would see them
            rows.append(
                f"| {area} | {_cell(what)} | `{raised}` | {_cell(message.splitlines()[0] if message else '')} |"
            )
    (HERE / "errors.md").write_text(HEADER + "\n".join(rows) + "\n")
    print(f"wrote {len(rows)} cases to {HERE / 'errors.md'}")


if __name__ == "__main__":
    main()
