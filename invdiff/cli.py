"""The ``invdiff`` command line: one entry point with subcommands.

User errors (bad arguments, files that exist or are missing) print one line ``invdiff: error: ...`` and exit
with code 2; ``--debug`` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]

_USER_ERRORS = (ValueError, TypeError, FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError,
                NotADirectoryError, ImportError)


def _threads() -> None:
    """Match torch's threads to the cores we may use unless the user chose (oversubscription is very slow)."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                         else (os.cpu_count() or 1), torch.get_num_threads())))


def _cmd_demo(args) -> int:
    from invdiff._files import atomic_path, check_writable, free_path
    from invdiff.demo import run_demo

    if args.samples < 2:
        raise ValueError(f"--samples must be at least 2, got {args.samples}")
    if args.out is None:
        out = free_path(Path("invdiff-demo.png"))  # never overwrite an earlier demo figure
    else:
        out = check_writable(Path(args.out), args.overwrite)
        if out.suffix.lower() != ".png":
            raise ValueError(f"--out must be a .png file, got {out}")
    _threads()
    with atomic_path(out) as tmp:
        run_demo(seed=args.seed, n_samples=args.samples, png=tmp, log=lambda s: print(s, flush=True))
    print(f"figure: {out}")
    return 0


def _cmd_train(args) -> int:
    from invdiff.training import RECIPES, train_recipe

    if args.recipe not in RECIPES:
        raise ValueError(f"unknown prior recipe {args.recipe!r}; choose one of {', '.join(RECIPES)}")
    out = Path(args.out)
    stem = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    existing = [p for p in (stem.with_suffix(".safetensors"), Path(f"{stem}.state.safetensors")) if p.exists()]
    if existing and not (args.resume or args.overwrite):
        raise FileExistsError(f"{existing[0]} exists; pass --resume to continue it or --overwrite to start over")
    if args.resume and not Path(f"{stem}.state.safetensors").exists():
        raise FileNotFoundError(f"--resume: no training state at {stem}.state.safetensors")
    _threads()
    prior, history = train_recipe(args.recipe, stem, steps=args.steps, resume=args.resume)
    print(f"prior: {stem}.safetensors (+ .json card); final loss (mean of last 100 steps) "
          f"{sum(history[-100:]) / max(1, len(history[-100:])):.4f}")
    return 0


def _options(pairs) -> dict:
    """``--option key=value`` pairs as sampler keyword arguments (numbers parsed, true/false/none understood)."""
    out = {}
    for item in pairs or []:
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key:
            raise ValueError(f"--option takes key=value, got {item!r}")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif low == "none":
            out[key] = None
        else:
            try:
                out[key] = int(value)
            except ValueError:
                try:
                    out[key] = float(value)
                except ValueError:
                    out[key] = value
    return out


def _cmd_simulate(args) -> int:
    from invdiff.scans import simulate

    _threads()
    simulate(args.clean, args.operator, args.out, prior=args.prior, resize=args.resize, seed=args.seed,
             dataset=args.dataset, overwrite=args.overwrite, log=lambda s: print(s, flush=True))
    return 0


def _cmd_reconstruct(args) -> int:
    from invdiff.samplers import METHODS
    from invdiff.scans import reconstruct

    if args.sampler not in METHODS:
        raise ValueError(f"unknown --sampler {args.sampler!r}; choose one of {', '.join(METHODS)}")
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    _threads()
    reconstruct(args.input, args.out, operator=args.operator, prior=args.prior, sampler=args.sampler,
                samples=args.samples, steps=args.steps, seed=args.seed, options=_options(args.option),
                save_samples=args.save_samples, report=args.report, reference=args.reference, summary=args.summary,
                dataset=args.dataset, device=args.device, overwrite=args.overwrite, progress=not args.quiet,
                log=lambda s: print(s, flush=True))
    return 0


def _cmd_evaluate(args) -> int:
    import json

    from invdiff.scans import evaluate

    _threads()
    m = evaluate(args.recon, args.reference, samples_path=args.samples, dataset=args.dataset)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"PSNR          {m['psnr']:.2f} dB")
    print(f"SSIM          {m['ssim']:.4f}")
    print(f"relative L2   {m['relative_l2']:.4f}")
    if "coverage90" in m:
        print(f"coverage 90%  {m['coverage90']:.3f}  (fraction of reference pixels inside the 90% interval)")
    if "reference_note" in m:
        print(f"(reference {m['reference_note']})")
    return 0


def _cmd_info(args) -> int:
    from invdiff.io import describe

    print(describe(args.file))
    return 0


def _cmd_priors(args) -> int:
    from invdiff.priors import available

    rows = available()
    if not rows:
        print("no bundled priors in this installation")
        return 0
    for name, card in rows.items():
        tr = card.get("training", {})
        print(f"{name:22s} {'x'.join(map(str, card['config']['shape'])):>9s}  {tr.get('steps', '?'):>6} steps  "
              f"{card.get('data', '')}")
    return 0


def _file_options(p, what: str, seed_help: str) -> None:
    p.add_argument("--dataset", help=f"dataset / variable to read from {what} (HDF5, netCDF, zarr, npz)")
    p.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _command(sub, name: str, func, help: str, description: str, examples=()):
    """A subcommand whose ``--help`` shows ``description`` as written and an ``examples:`` block."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    cmd = sub.add_parser(name, help=help, description=description, epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.set_defaults(func=func)
    return cmd


def _parser() -> argparse.ArgumentParser:
    from invdiff import __version__

    p = argparse.ArgumentParser(
        prog="invdiff",
        description="Solve inverse problems with diffusion-model priors, with uncertainty.",
        epilog="Run 'invdiff COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"invdiff {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = _command(
        sub, "demo", _cmd_demo, "a small exact reconstruction: prints PSNR/SSIM and writes a PNG",
        "Deblur a held-out 48x48 photograph crop with a Gaussian prior fitted to other photographs; the posterior "
        "is exact. Prints PSNR/SSIM and interval coverage and writes a PNG figure.",
        ["invdiff demo", "invdiff demo --out demo.png --overwrite --seed 1"],
    )
    demo.add_argument("--out", help="PNG figure to write (default: invdiff-demo.png, or the next free name)")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--samples", type=int, default=64, help="posterior samples to draw (default 64)")

    train = _command(
        sub, "train", _cmd_train, "train a diffusion prior with one of the committed recipes",
        "Train a UNet prior by EDM denoising score matching with a committed recipe (the bundled priors were made "
        "this way). Writes OUT.safetensors + OUT.json (the prior) and OUT.state.* (to resume).",
        ["invdiff train natural-gray-64 --out runs/natural --steps 200",
         "invdiff train natural-gray-64 --out runs/natural --steps 400 --resume"],
    )
    train.add_argument("recipe", help="ct-phantom-64, mri-brain-64, ultrasound-bmode-64, natural-gray-64 or kolmogorov-64")
    train.add_argument("--out", required=True, help="checkpoint stem, e.g. runs/ct (files OUT.safetensors, OUT.json, ...)")
    train.add_argument("--steps", type=int, help="total optimiser steps (default: the recipe's)")
    train.add_argument("--resume", action="store_true", help="continue from OUT.state.safetensors")
    train.add_argument("--overwrite", action="store_true", help="start over even if OUT exists")

    _command(sub, "priors", _cmd_priors, "list the bundled priors",
             "List the priors bundled with this installation (load them with invdiff.priors.load(name)).")

    from invdiff.problems import describe_setups

    simulate = _command(
        sub, "simulate", _cmd_simulate, "make a measurement file from a clean image file",
        "Measure the images of CLEAN (NIfTI, DICOM, HDF5, netCDF/zarr, npy/npz, PNG/TIFF) with an operator and "
        "write the measurement with the exact operator settings, the intensity scaling and the clean file's "
        "geometry stored in the file, so 'invdiff reconstruct' needs no flags to read it back. K-space goes to "
        "fastMRI-layout HDF5, sinograms to HDF5, station values to netCDF, image-like measurements to CLEAN's own "
        "format (the --out suffix decides).\n\noperators (NAME:key=value,...; noise is a standard deviation in "
        "the prior's normalised units):\n" + describe_setups(),
        ["invdiff simulate brain.nii.gz --operator mri:acceleration=4 --resize 64 --out brain_k.h5",
         "invdiff simulate CT_small.dcm --operator ct:views=16 --resize 64 --out sino.h5",
         "invdiff simulate field.nc --operator stations:n=64 --out obs.nc"],
    )
    simulate.add_argument("clean", help="the clean image file")
    simulate.add_argument("--operator", required=True, help="NAME[:key=value,...], e.g. mri:acceleration=4")
    simulate.add_argument("--out", required=True, help="the measurement file to write")
    simulate.add_argument("--prior", help="prior whose size and intensity range the measurement is made for "
                          "(default: the operator's bundled prior)")
    simulate.add_argument("--resize", type=int, help="resample each image to RESIZE x RESIZE first")
    _file_options(simulate, "CLEAN", "noise (and mask / station) seed")

    recon = _command(
        sub, "reconstruct", _cmd_reconstruct, "posterior mean, std and samples from a measurement file",
        "Draw posterior samples for every slice of INPUT and write the posterior mean and per-pixel std (and with "
        "--save-samples all samples) in the format --out names, with the input's geometry (NIfTI affine, netCDF "
        "coordinates, fastMRI attributes), a JSON summary (settings, nfe, seconds, metrics) and optionally a PNG "
        "report. Files written by 'invdiff simulate' carry their operator; for other files give --operator (a "
        "fastMRI file's mask is read from the file; a fully sampled one is undersampled with the --operator "
        "mask). Outputs are written whole or not at all; nothing is overwritten without --overwrite.",
        ["invdiff reconstruct brain_k.h5 --out brain_rec.h5 --report report.png",
         "invdiff reconstruct sino.h5 --sampler dps --samples 8 --steps 100 --out ct_rec.h5 --reference clean.h5",
         "invdiff reconstruct file_brain.h5 --operator mri:acceleration=4 --prior mri-brain-64 --out rec.h5"],
    )
    recon.add_argument("input", help="the measurement file")
    recon.add_argument("--out", required=True, help="results file (mean; containers also hold std and samples, "
                       "single-array formats get OUT_std / OUT_samples siblings)")
    recon.add_argument("--operator", help="NAME[:key=value,...]; default: the settings stored in INPUT")
    recon.add_argument("--prior", help="bundled prior name or checkpoint path (default: stored, else the operator's)")
    recon.add_argument("--sampler", default="dps", help="dps (default), smc, split-gibbs, red-diff, daps or ddrm")
    recon.add_argument("--samples", type=int, default=4, help="posterior samples per slice (default 4)")
    recon.add_argument("--steps", type=int, help="sampler steps (default: the sampler's)")
    recon.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="a sampler hyperparameter, e.g. --option zeta=0.3 (repeatable)")
    recon.add_argument("--save-samples", action="store_true", help="also write every posterior sample")
    recon.add_argument("--report", help="PNG figure: measurement, baseline, mean, std (and error with --reference)")
    recon.add_argument("--reference", help="clean file to score against (PSNR, SSIM, coverage in the summary)")
    recon.add_argument("--summary", help="JSON summary path (default: OUT's stem + .json)")
    recon.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    recon.add_argument("--quiet", action="store_true", help="no progress bar")
    _file_options(recon, "INPUT", "random seed")

    ev = _command(
        sub, "evaluate", _cmd_evaluate, "PSNR, SSIM, relative L2 and interval coverage of a reconstruction",
        "Score RECON against REFERENCE (the data range of the reference sets PSNR's peak). With posterior samples "
        "(in RECON's file, its OUT_samples sibling, or --samples) also the fraction of reference pixels inside the "
        "central 90% interval.",
        ["invdiff evaluate rec.h5 clean.nii.gz", "invdiff evaluate rec.nii.gz clean.nii.gz --json"],
    )
    ev.add_argument("recon", help="reconstruction file (its 'mean' array for containers)")
    ev.add_argument("reference", help="the clean reference file")
    ev.add_argument("--samples", help="file with posterior samples (default: found beside RECON)")
    ev.add_argument("--dataset", help="dataset / variable of RECON to score (default: mean)")
    ev.add_argument("--json", action="store_true", help="print JSON")

    info = _command(sub, "info", _cmd_info, "describe a scan file",
                    "Format, arrays, shapes, spacing, orientation, coordinates, attributes and stored invdiff "
                    "operator settings of FILE.", ["invdiff info brain_k.h5", "invdiff info CT_small.dcm"])
    info.add_argument("file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except _USER_ERRORS as e:
        if args.debug:
            raise
        print(f"invdiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("invdiff: interrupted; no partial output was left", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
