"""The README's code runs as written: every ``python`` block (in order, one namespace, as a reader pastes them
into one session) and the scan-file command-line block, in a scratch folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_blocks_run(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message says which block
            pytest.fail(f"README python block {i + 1} failed: {type(err).__name__}: {err}\n{code}")


def test_command_line_block_runs(tmp_path):
    """The scan-file section's commands: make a NIfTI, simulate k-space, reconstruct, evaluate."""
    block = next(b for b in _blocks("bash") if "invdiff simulate" in b and "python -c" in b)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "OMP_WAIT_POLICY": "PASSIVE",
           "MPLBACKEND": "Agg"}
    script = "set -euo pipefail\n" + block.replace("python -c", f"{sys.executable} -c")
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("brain.nii.gz", "brain_k.h5", "brain_rec.h5", "brain_rec.json", "report.png"):
        assert (tmp_path / name).exists(), name
    psnr = [float(v) for v in re.findall(r"PSNR\s+([\d.]+) dB", r.stdout)]
    assert psnr and psnr[-1] > 25, r.stdout  # the posterior mean, well above zero filling (~19.7 dB)
