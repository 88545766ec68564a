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

_USER_ERRORS = (ValueError, TypeError, FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError)


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

    demo = sub.add_parser(
        "demo",
        help="a small exact reconstruction: prints PSNR/SSIM and writes a PNG",
        description="Deblur a held-out 48x48 photograph crop with a Gaussian prior fitted to other photographs; "
        "the posterior is exact. Prints PSNR/SSIM and interval coverage and writes a PNG figure.",
        epilog="examples:\n  invdiff demo\n  invdiff demo --out demo.png --overwrite --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", help="PNG figure to write (default: invdiff-demo.png, or the next free name)")
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--samples", type=int, default=64, help="posterior samples to draw (default 64)")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser(
        "train",
        help="train a diffusion prior with one of the committed recipes",
        description="Train a UNet prior by EDM denoising score matching with a committed recipe (the bundled "
        "priors were made this way). Writes OUT.safetensors + OUT.json (the prior) and OUT.state.* (to resume).",
        epilog="examples:\n  invdiff train natural-gray-64 --out runs/natural --steps 200\n"
        "  invdiff train natural-gray-64 --out runs/natural --steps 400 --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("recipe", help="ct-phantom-64, mri-brain-64, ultrasound-bmode-64, natural-gray-64 or kolmogorov-64")
    train.add_argument("--out", required=True, help="checkpoint stem, e.g. runs/ct (files OUT.safetensors, OUT.json, ...)")
    train.add_argument("--steps", type=int, help="total optimiser steps (default: the recipe's)")
    train.add_argument("--resume", action="store_true", help="continue from OUT.state.safetensors")
    train.add_argument("--overwrite", action="store_true", help="start over even if OUT exists")
    train.set_defaults(func=_cmd_train)

    priors = sub.add_parser("priors", help="list the bundled priors", description="List the priors bundled "
                            "with this installation (load them with invdiff.priors.load(name)).")
    priors.set_defaults(func=_cmd_priors)
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
