"""A DDPM++-style U-Net score network for images (Song et al. 2021, App. H; Ho et al. 2020).

Encoder: a 3x3 conv, then per resolution level `num_res_blocks` residual blocks (with
self-attention where the resolution is in `attn_resolutions`) and a stride-2 conv down,
except at the last level. Middle: residual block, attention, residual block. Decoder:
per level `num_res_blocks + 1` residual blocks, each taking the matching encoder
activation concatenated on the channel axis, and a nearest-neighbour upsample + 3x3 conv.
Output: GroupNorm, SiLU, a zero-initialised 3x3 conv back to the input channel count, so an
untrained network predicts zero (eps = 0, or sigma * score = 0).

The noise condition c ([B]) is embedded either sinusoidally (Vaswani et al. 2017, applied
to 1000 c so that t in [0, 1] spans the DDPM step range) or with random Fourier features
(NCSN++, for c = log sigma of VE-type SDEs), then passed through a two-layer MLP and added
to every residual block. With `resblock_skip_rescale`, residual sums are divided by
sqrt(2) (DDPM++ "skip_rescale"), which keeps activations of order one with depth.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import GaussianFourierProjection

EMBEDDINGS = ("sinusoidal", "fourier")


def sinusoidal_embedding(c: jax.Array, dim: int, *, scale: float = 1000.0,
                         max_period: float = 10_000.0) -> jax.Array:
  """[sin(s c w_k), cos(s c w_k)], w_k = max_period^(-k / (dim/2 - 1)), k < dim/2; [B, dim].

  The transformer position encoding (Vaswani et al. 2017, Sec. 3.5) as used by DDPM for the
  step index; s = scale maps continuous t in [0, 1] to the 0..1000 step range.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
  arg = scale * c.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


def _rescale(x: jax.Array, skip_rescale: bool) -> jax.Array:
  return x / math.sqrt(2.0) if skip_rescale else x


class ResBlock(nn.Module):
  """DDPM++ residual block: h = conv(act(GN(x))) + Dense(temb); h = conv(dropout(act(GN(h))));
  out = (skip(x) + h) / sqrt(2), skip a 1x1 conv when the channel count changes."""

  out_ch: int
  num_groups: int
  dropout: float
  skip_rescale: bool

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
    h = nn.Conv(self.out_ch, (3, 3))(nn.silu(nn.GroupNorm(self.num_groups)(x)))
    h = h + nn.Dense(self.out_ch)(nn.silu(temb))[:, None, None, :]
    h = nn.silu(nn.GroupNorm(self.num_groups)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    # A small last conv (DDPM++ uses init_scale 0): each block starts near the identity.
    h = nn.Conv(self.out_ch, (3, 3), kernel_init=nn.initializers.variance_scaling(1e-10, "fan_avg", "uniform"))(h)
    skip = x if x.shape[-1] == self.out_ch else nn.Conv(self.out_ch, (1, 1))(x)
    return _rescale(skip + h, self.skip_rescale)


class AttnBlock(nn.Module):
  """Single-head self-attention over the H*W positions: x + Dense(softmax(q k^T / sqrt(C)) v)."""

  num_groups: int
  skip_rescale: bool

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    B, H, W, C = x.shape
    h = nn.GroupNorm(self.num_groups)(x).reshape(B, H * W, C)
    q, k, v = (nn.Dense(C)(h) for _ in range(3))
    w = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) / math.sqrt(C), axis=-1)
    h = nn.Dense(C, kernel_init=nn.initializers.zeros)(jnp.einsum("bij,bjc->bic", w, v))
    return _rescale(x + h.reshape(B, H, W, C), self.skip_rescale)


class UNet(nn.Module):
  """DDPM++-style U-Net on [B, H, W, C] images; output shaped like the input.

  Fields: `ch` base channels, `ch_mult` the multiplier per resolution level (level i has
  ch * ch_mult[i] channels at resolution H / 2^i), `num_res_blocks` per level,
  `attn_resolutions` the spatial sizes (e.g. (4,) or (16,)) that get self-attention,
  `dropout` inside residual blocks (needs a "dropout" rng when train=True),
  `resblock_skip_rescale`, `embedding` of the noise condition ("sinusoidal" or "fourier"),
  `fourier_scale`, `num_groups` of every GroupNorm, and `num_classes`: if > 0, a label
  embedding with num_classes + 1 rows, row num_classes the null (unconditional) label.
  `input_fourier`: frequencies f of extra input channels sin(pi f x), cos(pi f x) per channel
  (VDM App. C's Fourier features, which let the network resolve a fine level grid at low
  noise; f = 17 has the period 2 / 17 of 17 levels on [-1, 1]); () for none.
  """

  ch: int = 64
  ch_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  attn_resolutions: Sequence[int] = (4,)
  dropout: float = 0.0
  resblock_skip_rescale: bool = True
  embedding: str = "sinusoidal"
  fourier_scale: float = 16.0
  num_groups: int = 8
  num_classes: int = 0
  input_fourier: Sequence[float] = ()

  def validate(self) -> None:
    """Raises ValueError for out-of-range fields (called by models.get_model)."""
    mult = tuple(self.ch_mult)
    if not all(isinstance(f, (int, float)) and f > 0 for f in self.input_fourier):
      raise ValueError(f"model.input_fourier={list(self.input_fourier)!r} must be a list of positive frequencies.")
    checks = [
        ("ch", self.ch, isinstance(self.ch, int) and self.ch >= 1, "an integer >= 1"),
        ("ch_mult", list(mult), len(mult) >= 1 and all(isinstance(m, int) and m >= 1 for m in mult),
         "a non-empty list of integers >= 1"),
        ("num_res_blocks", self.num_res_blocks, isinstance(self.num_res_blocks, int) and self.num_res_blocks >= 1,
         "an integer >= 1"),
        ("attn_resolutions", list(self.attn_resolutions),
         all(isinstance(r, int) and r >= 1 for r in self.attn_resolutions), "a list of positive integers"),
        ("dropout", self.dropout, 0.0 <= self.dropout < 1.0, "in [0, 1)"),
        ("embedding", self.embedding, self.embedding in EMBEDDINGS, f"one of {list(EMBEDDINGS)}"),
        ("fourier_scale", self.fourier_scale, self.fourier_scale > 0, "> 0"),
        ("num_groups", self.num_groups, isinstance(self.num_groups, int) and self.num_groups >= 1
         and all((self.ch * m) % self.num_groups == 0 for m in mult),
         f"a positive integer dividing every level's channel count {[self.ch * m for m in mult]}"),
        ("num_classes", self.num_classes, isinstance(self.num_classes, int) and self.num_classes >= 0,
         "an integer >= 0"),
    ]
    for name, value, ok, allowed in checks:
      if not ok:
        raise ValueError(f"model.{name}={value!r} must be {allowed}.")

  def validate_input(self, shape: Sequence[int]) -> None:
    """Checks one example's shape (H, W, C) against the architecture.

    Raises:
      ValueError: not an image shape, H or W not divisible by 2^(len(ch_mult) - 1), or an
        attention resolution that no level reaches.
    """
    if len(shape) != 3:
      raise ValueError(f"model.name='unet' needs images [H, W, C]; the data has example shape {tuple(shape)}.")
    H, W, _ = shape
    f = 2 ** (len(self.ch_mult) - 1)
    if H % f or W % f:
      raise ValueError(f"model.ch_mult={list(self.ch_mult)} halves the resolution {len(self.ch_mult) - 1} times; "
                       f"the image size {H}x{W} must be divisible by {f}.")
    reached = [H // 2**i for i in range(len(self.ch_mult))]
    bad = [r for r in self.attn_resolutions if r not in reached]
    if bad:
      raise ValueError(f"model.attn_resolutions={list(self.attn_resolutions)}: {bad} not among the "
                       f"resolutions of this U-Net on {H}x{W} images, {reached}.")

  def _embed(self, c: jax.Array, y: jax.Array | None) -> jax.Array:
    """Noise (and label) embedding, [B, 4 ch]."""
    if self.embedding == "fourier":
      emb = GaussianFourierProjection(self.ch, self.fourier_scale)(c)
    else:
      emb = sinusoidal_embedding(c, self.ch)
    emb = nn.Dense(4 * self.ch)(emb)
    if self.num_classes > 0:
      labels = jnp.full(c.shape, self.num_classes, jnp.int32) if y is None else jnp.asarray(y, jnp.int32)
      emb = emb + nn.Embed(self.num_classes + 1, 4 * self.ch)(labels)
    return nn.Dense(4 * self.ch)(nn.silu(emb))

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, y: jax.Array | None = None, train: bool = False) -> jax.Array:
    """x [B, H, W, C], c [B] (t or log sigma), y [B] labels in 0..num_classes (None: null label)."""
    temb = self._embed(jnp.broadcast_to(c, x.shape[:1]), y)
    block = lambda m: ResBlock(self.ch * m, self.num_groups, self.dropout, self.resblock_skip_rescale)
    attn = lambda: AttnBlock(self.num_groups, self.resblock_skip_rescale)
    feats = [x] + [fn(jnp.pi * f * x) for f in self.input_fourier for fn in (jnp.sin, jnp.cos)]
    h = nn.Conv(self.ch, (3, 3))(jnp.concatenate(feats, axis=-1))
    hs = [h]
    for i, m in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = block(m)(h, temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
        hs.append(h)
      if i < len(self.ch_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
        hs.append(h)
    m_last = self.ch_mult[-1]
    h = block(m_last)(attn()(block(m_last)(h, temb, train)), temb, train)
    for i in reversed(range(len(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = block(self.ch_mult[i])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
      if i > 0:
        B, H, W, C = h.shape
        h = nn.Conv(C, (3, 3))(jax.image.resize(h, (B, 2 * H, 2 * W, C), "nearest"))
    h = nn.silu(nn.GroupNorm(self.num_groups)(h))
    return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
