"""The installed `invdiff` command, run as a user would, in a subprocess."""

import os
import shutil
import subprocess
import sys

import pytest

INVDIFF = shutil.which("invdiff") or os.path.join(os.path.dirname(sys.executable), "invdiff")


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([INVDIFF, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    res = _run(["demo", "--samples", "32"], d)
    assert res.returncode == 0, res.stderr
    return d, res


def test_demo_reconstructs_better_than_the_measurement(demo_dir):
    d, res = demo_dir
    png = d / "invdiff-demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {line[:16].strip(): line[16:].split() for line in res.stdout.splitlines() if line.startswith(("measurement ", "posterior mean"))}
    psnr_meas, psnr_mean = float(rows["measurement"][0]), float(rows["posterior mean"][0])
    ssim_meas, ssim_mean = float(rows["measurement"][1]), float(rows["posterior mean"][1])
    assert psnr_mean > psnr_meas + 2.0 and ssim_mean > ssim_meas
    assert not list(d.glob(".*part*"))  # no temporary file left


def test_demo_never_overwrites(demo_dir):
    d, _ = demo_dir
    before = (d / "invdiff-demo.png").read_bytes()
    res = _run(["demo", "--out", "invdiff-demo.png", "--samples", "2"], d)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("invdiff: error:") and "--overwrite" in res.stderr
    assert "Traceback" not in res.stderr
    assert (d / "invdiff-demo.png").read_bytes() == before


def test_bad_arguments_exit_2(tmp_path):
    res = _run(["demo", "--out", str(tmp_path / "missing" / "x.png")], tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = _run(["demo", "--out", str(tmp_path / "x.jpg")], tmp_path)
    assert res.returncode == 2 and ".png" in res.stderr
    res = _run(["frobnicate"], tmp_path)
    assert res.returncode == 2
    assert not list(tmp_path.iterdir())


def test_help_lists_commands(tmp_path):
    res = _run(["--help"], tmp_path)
    assert res.returncode == 0 and "demo" in res.stdout
    res = _run(["demo", "--help"], tmp_path)
    assert "examples:" in res.stdout


def test_train_refuses_to_overwrite_and_names_the_problem(tmp_path):
    (tmp_path / "run.safetensors").write_bytes(b"mine")
    res = _run(["train", "natural-gray-64", "--out", str(tmp_path / "run"), "--steps", "1"], tmp_path)
    assert res.returncode == 2 and "--resume" in res.stderr and "--overwrite" in res.stderr
    assert (tmp_path / "run.safetensors").read_bytes() == b"mine"
    res = _run(["train", "no-such-recipe", "--out", str(tmp_path / "x")], tmp_path)
    assert res.returncode == 2 and "natural-gray-64" in res.stderr
    res = _run(["train", "natural-gray-64", "--out", str(tmp_path / "new"), "--resume"], tmp_path)
    assert res.returncode == 2 and "no training state" in res.stderr


def test_priors_lists_the_bundled_priors(tmp_path):
    from invdiff.priors import available

    res = _run(["priors"], tmp_path)
    assert res.returncode == 0
    for name in available():
        assert name in res.stdout


def test_sampler_options_are_parsed_and_blank_keys_refused():
    from invdiff.cli import _options

    got = _options(["zeta=0.3", "chains = 64", "init=ode", "progress=TRUE", "rho_min=none"])
    assert got == {"zeta": 0.3, "chains": 64, "init": "ode", "progress": True, "rho_min": None}
    assert isinstance(got["chains"], int)
    for bad in (" =3", "zeta", "=1"):
        with pytest.raises(ValueError, match="key=value"):
            _options([bad])
