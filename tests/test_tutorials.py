"""Every tutorial notebook executes from top to bottom in quick mode (``INVDIFF_QUICK=1``) and shows a figure.

The notebooks are kept in git with their outputs stripped (checked here too), so what a reader sees after running
them is what this test ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
EXPECTED = [
    "01_quickstart", "02_ct_sparse_view", "03_mri_accelerated", "04_ultrasound", "05_deblurring",
    "06_weather_fields", "07_uncertainty_calibration", "08_your_own_operator_and_prior",
]


def test_all_tutorials_are_there():
    assert sorted(p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_tutorial_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = TUTORIALS / f"{name}.ipynb"
    if not path.exists():
        pytest.fail(f"{path} is missing")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{name}: outputs must be stripped in git"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3, f"{name}: needs a narrative"
    monkeypatch.setenv("INVDIFF_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures become outputs
    # the notebook runs in a scratch folder: whatever it writes lands there, never in the checkout
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{name} shows no figure"
