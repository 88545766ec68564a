r"""Train a :class:`~invdiff.priors.UNetPrior` by EDM denoising score matching.

Each step draws a batch :math:`x` from the data, noise levels :math:`\ln\sigma \sim \mathcal N(P_\text{mean},
P_\text{std}^2)` and :math:`n \sim \mathcal N(0, \sigma^2 I)`, and minimises

.. math::
    \mathbb E\Big[\lambda(\sigma)\, \| D_\theta(x + n, \sigma) - x \|^2\Big], \qquad
    \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\,\sigma_d)^2}

(Karras et al. 2022, eq. 8 and Table 1), with AdamW, a linear learning-rate warm-up, gradient-norm clipping and
an exponential moving average (EMA) of the weights, which is the prior that gets saved.

Determinism: every random draw (batch indices, noise levels, noise, dropout) comes from one seeded generator
whose state is checkpointed, so a run resumed from a checkpoint continues exactly as the uninterrupted run
would have on the same machine and thread count. Checkpoints are safetensors files plus JSON cards:

* ``<out>.safetensors`` / ``<out>.json`` — the EMA prior and its card (loadable by
  :func:`invdiff.priors.load`);
* ``<out>.state.safetensors`` / ``<out>.state.json`` — the training state (weights, EMA, optimiser moments,
  generator state, step, loss history) for :func:`train`'s ``resume``.

References:
    Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
    NeurIPS 2022.
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import time
from pathlib import Path

import torch

from invdiff.priors.unet import UNet, UNetPrior

__all__ = ["TrainConfig", "train", "prior_for_data", "edm_loss"]


@dataclasses.dataclass
class TrainConfig:
    """Training recipe (all saved in the card).

    Attributes:
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: images per step.
        lr: peak AdamW learning rate, reached after ``warmup`` steps.
        warmup: linear warm-up steps.
        weight_decay: AdamW decoupled weight decay.
        ema_halflife: EMA half-life in steps (decay ``0.5 ** (1 / ema_halflife)``).
        grad_clip: clip the global gradient norm to this value (``0``: no clipping).
        p_mean, p_std: the log-normal noise-level distribution of EDM.
        uniform_fraction: the fraction of each batch whose noise levels are instead log-uniform over the prior's
            whole range ``[sigma_min, sigma_max]``, so that the ends the samplers visit (EDM's log-normal almost
            never draws ``sigma < 0.01 sigma_data``) are trained too.
        seed: seeds everything.
        checkpoint_every: write checkpoints every this many steps (and at the end), when ``out`` is given.
    """

    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 200
    weight_decay: float = 0.0
    ema_halflife: float = 250.0
    grad_clip: float = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2
    uniform_fraction: float = 0.0
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not (self.lr > 0 and self.ema_halflife > 0 and self.p_std > 0):
            raise ValueError("TrainConfig: lr, ema_halflife and p_std must be > 0")
        if not 0.0 <= self.uniform_fraction <= 1.0:
            raise ValueError(f"TrainConfig: uniform_fraction must lie in [0, 1], got {self.uniform_fraction}")
        if self.checkpoint_every < 1 or self.warmup < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig: checkpoint_every >= 1, warmup >= 0 and grad_clip >= 0 are required")


def prior_for_data(data: torch.Tensor, *, card: dict | None = None, **net_config) -> UNetPrior:
    r"""A fresh :class:`UNetPrior` sized for ``data`` ``(N, C, H, W)``.

    ``data_mean`` and ``sigma_data`` are the data's mean and standard deviation; ``sigma_max`` is 5 times the
    square root of the largest eigenvalue of the centred data's second moment (by power iteration), so the
    samplers start from noise that swamps the data; ``sigma_min`` is ``0.004 * sigma_data`` (EDM's 0.002 at
    ``sigma_data = 0.5``).
    """
    if data.ndim != 4:
        raise ValueError(f"prior_for_data: data must be (N, C, H, W), got shape {tuple(data.shape)}")
    x = data.to(torch.float64)
    mean = float(x.mean())
    flat = (x - mean).reshape(x.shape[0], -1)
    sd = float(flat.std())
    if not sd > 0:
        raise ValueError("prior_for_data: the data are constant")
    v = torch.ones(flat.shape[1], dtype=torch.float64)
    for _ in range(30):
        v = flat.T @ (flat @ v) / flat.shape[0]
        lam = float(v.norm())
        v = v / lam
    return UNetPrior(tuple(data.shape[1:]), sigma_data=sd, data_mean=mean, sigma_min=0.004 * sd,
                     sigma_max=5 * math.sqrt(lam), card=card, **net_config)


def edm_loss(prior: UNetPrior, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r"""Mean EDM loss :math:`\lambda(\sigma)\|D(x + \sigma n, \sigma) - x\|^2` per pixel over a batch ``(B, C, H, W)``."""
    sd = prior.sigma_data
    s = sigma.reshape(-1, 1, 1, 1)
    weight = (s**2 + sd**2) / (s * sd) ** 2
    xc = x - prior.data_mean
    D = prior.precondition(xc + s * noise, s)
    return (weight * (D - xc) ** 2).mean()


def _lr(config: TrainConfig, step: int) -> float:
    return config.lr * min(1.0, (step + 1) / max(1, config.warmup))


def _state_tensors(model, ema, opt, gen) -> tuple[dict, dict]:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.net.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().contiguous() for k, v in ema.net.state_dict().items()})
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for name, val in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(val).detach().reshape(-1).contiguous() \
                if torch.as_tensor(val).ndim == 0 else val.detach().contiguous()
    tensors["generator"] = gen.get_state()
    meta = {"param_groups": sd["param_groups"], "opt_shapes": {f"opt.{i}.{n}": list(torch.as_tensor(v).shape)
                                                               for i, st in sd["state"].items() for n, v in st.items()}}
    return tensors, meta


def _save_state(out: Path, step, model, ema, opt, gen, history, config, card):
    from safetensors.torch import save_file

    from invdiff._files import atomic_path

    tensors, meta = _state_tensors(model, ema, opt, gen)
    meta.update({"step": step, "history": history, "config": dataclasses.asdict(config),
                 "prior": model.config(), "card": card})
    with atomic_path(Path(f"{out}.state.safetensors")) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp))
    with atomic_path(Path(f"{out}.state.json")) as tmp:
        Path(tmp).write_text(json.dumps(meta))


def _load_state(path: Path):
    from safetensors.torch import load_file

    stem = str(path).removesuffix(".safetensors").removesuffix(".json").removesuffix(".state")
    st_path, meta_path = Path(f"{stem}.state.safetensors"), Path(f"{stem}.state.json")
    for p in (st_path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(f"resume: {p} not found (a training state is <out>.state.safetensors + .json)")
    return load_file(str(st_path)), json.loads(meta_path.read_text())


def train(
    data: torch.Tensor,
    config: TrainConfig | None = None,
    *,
    prior: UNetPrior | None = None,
    out=None,
    resume=None,
    card: dict | None = None,
    progress: bool = True,
    net_config: dict | None = None,
) -> tuple[UNetPrior, list[float]]:
    """Train a UNet prior on ``data`` and return ``(ema_prior, loss_history)``.

    Args:
        data: the training images, ``(N, C, H, W)`` float tensor (on the training device).
        config: the recipe (default :class:`TrainConfig()`).
        prior: the model to train (default :func:`prior_for_data` with ``net_config``).
        out: checkpoint stem (e.g. ``"runs/ct"``): writes the EMA prior and the training state every
            ``config.checkpoint_every`` steps and at the end.
        resume: a training-state path written by an earlier run; continues from its step with its weights,
            optimiser moments and generator state. ``config.steps`` may be raised to train longer.
        card: provenance for the prior's card (data description, value range, licence, command...).
        progress: show a progress bar with the running loss.
        net_config: :class:`~invdiff.priors.unet.UNet` arguments for a fresh prior.

    Returns:
        The EMA prior (in eval mode) and the per-step training losses.
    """
    config = config or TrainConfig()
    if not isinstance(data, torch.Tensor) or data.ndim != 4:
        raise ValueError("train: data must be an (N, C, H, W) tensor")
    if not torch.isfinite(data).all():
        raise ValueError("train: data contain NaN or Inf")
    card = dict(card or {})
    history: list[float] = []
    start = 0
    gen = torch.Generator(device=data.device).manual_seed(config.seed)
    if resume is not None:
        tensors, meta = _load_state(Path(resume))
        p = meta["prior"]
        prior = UNetPrior(tuple(p["shape"]), UNet(**p["net"]), sigma_data=p["sigma_data"], data_mean=p["data_mean"],
                          sigma_min=p["sigma_min"], sigma_max=p["sigma_max"], card=meta.get("card") or card)
        card = meta.get("card") or card
        start, history = int(meta["step"]), list(meta["history"])
    elif prior is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # the initial weights come from the seed too
            prior = prior_for_data(data, card=card, **(net_config or {}))
    if tuple(data.shape[1:]) != prior.shape:
        raise ValueError(f"train: data images {tuple(data.shape[1:])} do not match the prior's shape {prior.shape}")
    prior = prior.to(data.device).train()
    ema = copy.deepcopy(prior).eval().requires_grad_(False)
    opt = torch.optim.AdamW(prior.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if resume is not None:
        prior.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        state = {}
        for key, shape in meta["opt_shapes"].items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = tensors[key].reshape(shape)
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        gen.set_state(tensors["generator"])
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    decay = 0.5 ** (1.0 / config.ema_halflife)
    N = data.shape[0]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step")
    t0 = time.perf_counter()
    wall = float(card.get("training", {}).get("wall_seconds", 0.0)) if isinstance(card.get("training"), dict) else 0.0

    def checkpoint(step):
        info = {"steps": step, "wall_seconds": round(wall + time.perf_counter() - t0, 1),
                "final_loss_ema100": float(sum(history[-100:]) / max(1, len(history[-100:]))),
                "recipe": dataclasses.asdict(config), "torch": torch.__version__, "platform": platform.platform(),
                "device": str(data.device)}
        full_card = {**card, "training": info}
        ema.card = full_card
        ema.save(out)
        _save_state(Path(out), step, prior, ema, opt, gen, history, config, full_card)

    # dropout draws from torch's global generator: reseed it from ours each step (so resume is exact), inside
    # fork_rng so that the caller's global random state is left as it was
    rng_devices = [data.device.index or 0] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        for step in range(start, config.steps):
            idx = torch.randint(N, (config.batch_size,), generator=gen, device=data.device)
            x = data[idx]
            sigma = torch.exp(config.p_mean + config.p_std * torch.randn(config.batch_size, generator=gen,
                                                                          device=data.device, dtype=x.dtype))
            if config.uniform_fraction > 0:
                lo, hi = math.log(prior.sigma_min), math.log(prior.sigma_max)
                u = torch.rand(config.batch_size, generator=gen, device=data.device, dtype=x.dtype)
                pick = torch.rand(config.batch_size, generator=gen, device=data.device) < config.uniform_fraction
                sigma = torch.where(pick, torch.exp(lo + (hi - lo) * u), sigma)
            noise = torch.randn(x.shape, generator=gen, device=data.device, dtype=x.dtype)
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen, device=data.device)))  # dropout
            for group in opt.param_groups:
                group["lr"] = _lr(config, step)
            loss = edm_loss(prior, x, sigma, noise)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train: the loss became {float(loss)} at step {step}; lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(prior.net.parameters(), config.grad_clip)
            opt.step()
            with torch.no_grad():
                for pe, p in zip(ema.net.parameters(), prior.net.parameters()):
                    pe.lerp_(p, 1 - decay)
            history.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{sum(history[-50:]) / len(history[-50:]):.4f}")
            if out is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
                checkpoint(step + 1)
    if bar is not None:
        bar.close()
    ema.card = {**card, **ema.card}
    return ema.eval(), history


# -- the recipes of the bundled priors --------------------------------------------------------------------------
#: Test images of the natural-image prior are cut from "camera" only; training uses the others.
NATURAL_TRAIN_IMAGES = ("moon", "coins", "page", "text", "brick", "grass", "gravel", "astronaut", "coffee",
                        "chelsea", "rocket", "clock")
NATURAL_TEST_IMAGES = ("camera",)

_NET = {"width": 32, "mults": (1, 2, 2, 2), "num_blocks": 1, "attention": (3,)}


def _natural(n, split, seed):
    from invdiff.datasets import NaturalPatches

    images = NATURAL_TRAIN_IMAGES if split == "train" else NATURAL_TEST_IMAGES
    return NaturalPatches(64, n, images=images, seed=seed).patches


def _dataset(module, cls, **options):
    def build(n, split, seed):
        import importlib

        ds = getattr(importlib.import_module(f"invdiff.datasets.{module}"), cls)(n, 64, seed=seed, split=split,
                                                                                   **options)
        return ds.images

    return build


#: name -> (data builder ``(n, split, seed) -> (n, 1, 64, 64)``, training images, data card, recipe overrides)
RECIPES: dict[str, dict] = {
    "natural-gray-64": {
        "data": _natural, "n": 20_000,
        "card": {"data": "64x64 grayscale patches of scikit-image's photographs (all but 'camera', held out)",
                 "value_range": [0.0, 1.0], "licence": "scikit-image data: see skimage/data/README.txt",
                 "source": "skimage.data (bundled with scikit-image, BSD-3-Clause package)"},
    },
    "ct-phantom-64": {
        "data": _dataset("ct", "EllipsePhantoms"), "n": 20_000,
        "card": {"data": "64x64 random-ellipse CT phantoms (invdiff.datasets.ct.EllipsePhantoms)",
                 "value_range": [0.0, 1.0], "licence": "synthetic (generated by invdiff, BSD-3-Clause)"},
    },
    "mri-brain-64": {
        "data": _dataset("mri", "BrainSlices"), "n": 20_000,
        "card": {"data": "64x64 augmented T1 brain slices (invdiff.datasets.mri.BrainSlices)",
                 "value_range": [0.0, 1.0], "licence": "see invdiff/datasets/data/BRAIN_SLICES_LICENSE.txt"},
    },
    "ultrasound-bmode-64": {
        "data": _dataset("ultrasound", "BModeImages"), "n": 20_000,
        "card": {"data": "64x64 simulated B-mode images (invdiff.datasets.ultrasound.BModeImages)",
                 "value_range": [0.0, 1.0], "licence": "synthetic (generated by invdiff, BSD-3-Clause)"},
    },
    "kolmogorov-64": {
        "data": _dataset("kolmogorov", "KolmogorovFlow", interval=1.0), "n": 4_000,
        "card": {"data": "64x64 Kolmogorov-flow vorticity / 4.5, states 1 time unit apart "
                         "(invdiff.datasets.kolmogorov.KolmogorovFlow, Re 1000, grid 128)",
                 "value_range": None, "licence": "synthetic (generated by invdiff, BSD-3-Clause)"},
    },
}

#: the recipe every bundled prior was trained with (a recipe may override fields)
BUNDLED_CONFIG = {"steps": 2000, "batch_size": 16, "lr": 2e-4, "warmup": 200, "ema_halflife": 250.0, "seed": 0,
                  "checkpoint_every": 250, "uniform_fraction": 0.25}


def recipe_data(name: str, split: str = "train", n: int | None = None, seed: int | None = None) -> torch.Tensor:
    """The images a bundled prior is trained (``split="train"``) or evaluated (``"test"``) on."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    r = RECIPES[name]
    n = r["n"] if n is None else n
    seed = (0 if split == "train" else 1) if seed is None else seed
    return r["data"](n, split, seed).to(torch.float32)


def train_recipe(name: str, out, *, steps: int | None = None, resume: bool = False, progress: bool = True):
    """Train the bundled prior ``name`` with its committed recipe; checkpoints under ``out``."""
    r = RECIPES.get(name)
    if r is None:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    cfg = {**BUNDLED_CONFIG, **r.get("config", {})}
    if steps is not None:
        cfg["steps"] = int(steps)
    data = recipe_data(name, "train")
    card = {"name": name, **r["card"], "command": f"invdiff train {name} --out {out}"}
    return train(data, TrainConfig(**cfg), out=out, resume=out if resume else None, card=card, progress=progress,
                 net_config={**_NET, **r.get("net", {})})
