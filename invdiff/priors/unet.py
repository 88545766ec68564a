r"""A learned prior: a compact UNet denoiser with EDM preconditioning.

The network :math:`F_\theta` is wrapped as in Karras et al. (2022, Table 1, "Preconditioning"):

.. math::
    D_\theta(x, \sigma) = c_\text{skip}(\sigma)\, x + c_\text{out}(\sigma)\,
    F_\theta\big(c_\text{in}(\sigma)\, x,\ c_\text{noise}(\sigma)\big),

    c_\text{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\quad
    c_\text{out} = \frac{\sigma\,\sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
    c_\text{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
    c_\text{noise} = \tfrac14 \ln\sigma,

so the network's input and target both have unit variance at every noise level. :math:`\sigma_d` is the data's
standard deviation *about its mean*; the data mean is subtracted before and added after, so a prior trained on
images in [0, 1] needs no rescaling by the user.

The UNet: a 3x3 convolution in, then per resolution ``num_blocks`` residual blocks (GroupNorm, SiLU,
convolutions, the noise embedding added as a per-channel scale and shift), optional self-attention at chosen
resolutions, average-pool downsampling and nearest-neighbour upsampling with skip connections.

Checkpoints: the weights in safetensors and a JSON card (network config, data shape, value range,
:math:`\sigma` range, training recipe and provenance); :meth:`UNetPrior.save` / :meth:`UNetPrior.load`.

References:
    Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
    NeurIPS 2022.
    Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", 2015.
    Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021 (scale-shift norm).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .base import Prior, expand_sigma

__all__ = ["UNet", "UNetPrior"]

CARD_VERSION = 1


def _groups(ch: int) -> int:
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class _NoiseEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` followed by a two-layer MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=c_noise.device, dtype=c_noise.dtype) / half)
        arg = c_noise[:, None] * 100.0 * freqs[None, :]  # c_noise ~ [-2, 2]: spread it over the frequencies
        return self.mlp(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.drop(h))


class _Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 1):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.heads = heads

    def forward(self, x, e=None):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3 * self.heads, C // self.heads, H * W).transpose(-1, -2).chunk(3, 1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    r"""The raw network :math:`F_\theta(x, c_\text{noise})`, input and output ``(B, C, H, W)``.

    Args:
        channels: image channels ``C``.
        width: channels at the first resolution.
        mults: channel multipliers per resolution (its length is the number of resolutions; ``H`` and ``W``
            must be divisible by ``2 ** (len(mults) - 1)``).
        num_blocks: residual blocks per resolution (the decoder has one more).
        attention: resolutions (as downsampling levels, 0 = full size) with self-attention.
        dropout: dropout rate inside the residual blocks.
    """

    def __init__(self, channels: int = 1, width: int = 32, mults=(1, 2, 2), num_blocks: int = 1,
                 attention=(), dropout: float = 0.0):
        super().__init__()
        self.config = dict(channels=int(channels), width=int(width), mults=[int(m) for m in mults],
                           num_blocks=int(num_blocks), attention=[int(a) for a in attention], dropout=float(dropout))
        emb = 4 * width
        self.embed = _NoiseEmbedding(width)
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [width]
        ch = width
        for level, m in enumerate(mults):
            for _ in range(num_blocks):
                blocks = nn.ModuleList([_ResBlock(ch, width * m, emb, dropout)])
                ch = width * m
                if level in attention:
                    blocks.append(_Attention(ch))
                self.down.append(blocks)
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(nn.ModuleList([nn.AvgPool2d(2)]))
                skips.append(ch)
        self.mid = nn.ModuleList([_ResBlock(ch, ch, emb, dropout), _Attention(ch), _ResBlock(ch, ch, emb, dropout)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(num_blocks + 1):
                blocks = nn.ModuleList([_ResBlock(ch + skips.pop(), width * m, emb, dropout)])
                ch = width * m
                if level in attention:
                    blocks.append(_Attention(ch))
                self.up.append(blocks)
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.factor = 2 ** (len(mults) - 1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        e = self.embed(c_noise)
        h = self.inp(x)
        hs = [h]
        for blocks in self.down:
            for b in blocks:
                h = b(h, e) if isinstance(b, (_ResBlock, _Attention)) else b(h)
            hs.append(h)
        for b in self.mid:
            h = b(h, e)
        for blocks in self.up:
            if isinstance(blocks[0], _ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for b in blocks:
                h = b(h, e) if isinstance(b, (_ResBlock, _Attention)) else b(h)
        return self.out(F.silu(self.out_norm(h)))


class UNetPrior(Prior):
    r"""A trained UNet denoiser as a :class:`Prior` over images of ``shape = (C, H, W)`` (module docstring).

    Args:
        shape: ``(C, H, W)``.
        net: a :class:`UNet` (default: a fresh one with ``**net_config``).
        sigma_data: standard deviation of the training data about ``data_mean`` (per pixel, pooled).
        data_mean: mean of the training data (a number), subtracted before the network.
        sigma_min, sigma_max: the noise range the prior was trained for.
        card: the provenance record (data, value range, recipe, licence...), saved with the weights.
        net_config: :class:`UNet` arguments when ``net`` is not given.

    Examples:
        >>> import torch
        >>> prior = UNetPrior((1, 16, 16), sigma_data=0.3, data_mean=0.5, width=8, mults=(1, 2))
        >>> prior.denoise(torch.rand(2, 1, 16, 16), 0.5).shape    # an untrained net: D = c_skip x + ...
        torch.Size([2, 1, 16, 16])
    """

    def __init__(self, shape, net: UNet | None = None, *, sigma_data: float, data_mean: float = 0.0,
                 sigma_min: float = 2e-3, sigma_max: float = 80.0, card: dict | None = None, **net_config):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ValueError(f"UNetPrior: shape must be (C, H, W), got {shape}")
        if not sigma_data > 0:
            raise ValueError(f"UNetPrior: sigma_data must be > 0, got {sigma_data}")
        super().__init__(shape, sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data)
        self.net = net if net is not None else UNet(channels=shape[0], **net_config)
        if self.net.config["channels"] != shape[0]:
            raise ValueError(f"UNetPrior: the network has {self.net.config['channels']} channels, shape {shape}")
        if shape[1] % self.net.factor or shape[2] % self.net.factor:
            raise ValueError(f"UNetPrior: H and W must be divisible by {self.net.factor} for this network")
        self.data_mean = float(data_mean)
        self.card = dict(card or {})

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = self._check_x(x)
        batch = x.shape[: x.ndim - 3]
        s = expand_sigma(sigma, x, 3)
        xf = x.reshape(-1, *self.shape)
        sf = torch.broadcast_to(s, (*batch, 1, 1, 1)).reshape(-1, 1, 1, 1) if s.ndim else s.expand(xf.shape[0], 1, 1, 1)
        return self.precondition(xf - self.data_mean, sf).reshape(x.shape) + self.data_mean

    def precondition(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """EDM-preconditioned :math:`D` on centred data ``x`` ``(B, C, H, W)``, ``sigma`` ``(B, 1, 1, 1)``."""
        sd = self.sigma_data
        dtype = next(self.net.parameters()).dtype
        sig = sigma.to(x.dtype).clamp_min(1e-12)
        c_skip = sd**2 / (sig**2 + sd**2)
        c_out = sig * sd / (sig**2 + sd**2).sqrt()
        c_in = 1 / (sig**2 + sd**2).sqrt()
        c_noise = sig.reshape(-1).log() / 4
        F_x = self.net((c_in * x).to(dtype), c_noise.to(dtype)).to(x.dtype)
        return c_skip * x + c_out * F_x

    # -- checkpoints ------------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"shape": list(self.shape), "sigma_data": self.sigma_data, "data_mean": self.data_mean,
                "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "net": self.net.config}

    def save(self, path, *, extra_card: dict | None = None) -> Path:
        """Write ``<path>.safetensors`` (weights, float32) and ``<path>.json`` (the card); returns the weights'
        path. Existing files are replaced atomically."""
        from safetensors.torch import save_file

        from invdiff._files import atomic_path

        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
        weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in self.net.state_dict().items()}
        card = {"format": "invdiff-unet-prior", "card_version": CARD_VERSION, "config": self.config(),
                **self.card, **(extra_card or {})}
        with atomic_path(weights) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(card_path) as tmp:
            Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=False))
        return weights

    @classmethod
    def load(cls, path, *, map_location="cpu") -> "UNetPrior":
        """Load a prior saved by :meth:`save` (the ``.safetensors`` path, the ``.json`` path, or the stem)."""
        from safetensors.torch import load_file

        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
        weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        for p in (weights, card_path):
            if not p.is_file():
                raise FileNotFoundError(f"prior checkpoint incomplete: {p} not found (need .safetensors and .json)")
        card = json.loads(card_path.read_text())
        if card.get("format") != "invdiff-unet-prior":
            raise ValueError(f"{card_path} is not an invdiff UNet prior card")
        cfg = card["config"]
        prior = cls(tuple(cfg["shape"]), UNet(**cfg["net"]), sigma_data=cfg["sigma_data"], data_mean=cfg["data_mean"],
                    sigma_min=cfg["sigma_min"], sigma_max=cfg["sigma_max"],
                    card={k: v for k, v in card.items() if k not in ("format", "card_version", "config")})
        prior.net.load_state_dict(load_file(str(weights), device=str(map_location)))
        return prior.eval()
