"""operators/ and datasets/ install INTO the invdiff namespace, for editable and wheel installs alike."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_imports_from_this_install():
    import invdiff.datasets
    import invdiff.operators

    assert Path(invdiff.operators.__file__).parent.name == "operators"
    assert Path(invdiff.datasets.__file__).parent.name == "datasets"
    assert hasattr(invdiff.operators, "MatrixOperator") and hasattr(invdiff.datasets, "NaturalPatches")


@pytest.mark.slow
def test_wheel_contains_and_imports_the_mapped_packages(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("invdiff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("invdiff/operators/base.py", "invdiff/operators/linear.py", "invdiff/datasets/natural.py",
              "invdiff/priors/gaussian.py", "invdiff/cli.py"):
        assert f in names, f
    assert not any(n.startswith(("operators/", "datasets/", "tests/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import invdiff, invdiff.operators, invdiff.datasets; print(invdiff.operators.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(site)))
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stdout
