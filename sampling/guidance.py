"""Guidance: a conditional model or a classifier turned into an ordinary score_fn(x, t) by closing
over the labels, so every sampler samples p_t(x | c) unchanged.

The closures are `jax.tree_util.Partial` pytrees whose labels, scales and bound parameters are
leaves: samplers trace them instead of recompiling per label. Labels are [B] (one per sample; a
scalar broadcasts): row i depends only on label i and key i.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sampling.base import ScoreFn, as_pytree_fn

Array = jax.Array
CondScoreFn = Callable[..., Array]  # cond_score_fn(x, t, y) -> score; y=None is the null label


def _labels(y, x: Array) -> Array:
  return jnp.broadcast_to(jnp.asarray(y, jnp.int32), x.shape[:1])


def _cfg_score(cond_score_fn, y, w, x, t):
  s_c = cond_score_fn(x, t, _labels(y, x))
  s_u = cond_score_fn(x, t, None)
  return (1.0 + w) * s_c - w * s_u


def classifier_free_guidance(cond_score_fn: CondScoreFn, y, w) -> ScoreFn:
  """Classifier-free guidance (Ho & Salimans 2022, Eq. 6 in score form):

      s_w(x, t) = (1 + w) s(x, t, y) - w s(x, t, null).

  w = 0 is the conditional score; w > 0 sharpens towards the class. Each call evaluates the
  network twice (conditional and null label): the network NFE is twice the sampler's nfe.

  Args:
    cond_score_fn: cond_score_fn(x, t, y) -> score, y [B] int or None for the null label
      (e.g. functools.partial(model_score_fn, params), or target.conditional_score_fn(sde)).
    y: labels [B] (or a scalar for the whole batch).
    w: guidance weight (a float or a traced scalar).

  Returns:
    score_fn(x, t), a pytree-callable for any sampler.
  """
  return jax.tree_util.Partial(_cfg_score, as_pytree_fn(cond_score_fn), jnp.asarray(y, jnp.int32),
                               jnp.asarray(w, jnp.float32))


def _label_log_prob_grad(log_prob_fn, y, x, t):
  """grad_x log p(y_i | x_i, t) row by row; the log-softmax makes logits and log-probs interchangeable."""
  y = _labels(y, x)

  def total(x_):
    log_p = jax.nn.log_softmax(log_prob_fn(x_, t), axis=-1)
    return jnp.sum(jnp.take_along_axis(log_p, y[:, None], axis=1))

  return jax.grad(total)(x)


def _classifier_guided_score(score_fn, log_prob_fn, y, scale, x, t):
  return score_fn(x, t) + scale * _label_log_prob_grad(log_prob_fn, y, x, t)


def classifier_guidance(score_fn: ScoreFn, log_prob_fn: Callable[[Array, Array], Array], y,
                        scale) -> ScoreFn:
  """Classifier guidance (Song et al. 2021, Eq. 14; Dhariwal & Nichol 2021, Alg. 1 as a score):

      s(x, t | y) = s(x, t) + scale grad_x log p_t(y | x).

  With the exact score, the exact posterior p_t(y | x) and scale = 1 this is the conditional
  score grad log p_t(x | y) (Bayes). The classifier gradient is one extra forward and backward
  pass per sampler evaluation (not counted in the sampler's nfe).

  Args:
    score_fn: the unconditional score, score_fn(x, t).
    log_prob_fn: log_prob_fn(x, t) -> [B, K] log p(c | x_t) or logits (e.g. the exact
      `target.class_log_posterior_fn(sde)` or functools.partial(classifier_fn, params)).
    y: labels [B] (or a scalar).
    scale: guidance scale (1 = Bayes).

  Returns:
    score_fn(x, t), a pytree-callable for any sampler.
  """
  return jax.tree_util.Partial(_classifier_guided_score, as_pytree_fn(score_fn), as_pytree_fn(log_prob_fn),
                               jnp.asarray(y, jnp.int32), jnp.asarray(scale, jnp.float32))
