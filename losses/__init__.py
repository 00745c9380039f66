"""Training objectives (continuous DSM, DDPM eps, SMLD, noise-conditional classifier, and in
`losses.vdm` the continuous-time variational bound with a fixed or learned schedule), the
optimizer, EMA and the pure train-step factory.

Nothing here jits, shards or touches files: `run_lib` does that.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import sde_lib
from losses import vdm
from utils import Registry, bcast as _bcast, check_int

Array = jax.Array
ModelScoreFn = Callable[[Any, Array, Array], Array]
ModelEpsFn = Callable[[Any, Array, Array], Array]  # model_eps_fn(params, x, t_index) -> eps
SCHEDULES = ("constant", "cosine", "linear")
LOSS_TYPES = ("l2", "l1", "huber")


_IS_GRID = 4096  # cells of the tabulated importance-sampling distribution of t


def importance_times(sde: sde_lib.SDE, eps: float) -> Callable[[Array, int], tuple[Array, Array]]:
  """Sampler of t on [eps, T] with density q(t) proportional to g(t)^2 / sigma(t)^2.

  For every linear SDE g^2 / sigma^2 = d/dt log(sigma^2 / alpha^2) = gamma'(t), gamma = -log SNR
  (from g^2 = d sigma^2/dt - 2 f sigma^2 and f = d log alpha / dt), so q is uniform in gamma:
  Song et al. 2021b's importance distribution for likelihood weighting. gamma is tabulated on
  _IS_GRID cells of t, geometric from eps to T (gamma' ~ 1 / t near t = 0 for VE and VP), and
  inverted linearly, so q is piecewise constant; its exact value is returned with t, which keeps
  the importance weights w / q exactly unbiased.

  Returns:
    fn(key, n) -> (t [n], q(t) [n]).
  """
  grid = jnp.asarray(np.geomspace(eps, sde.T, _IS_GRID + 1), jnp.float32)
  gamma = -2.0 * sde.log_snr(grid)
  widths = jnp.diff(gamma)  # > 0: gamma increases
  cdf = jnp.concatenate([jnp.zeros(1), jnp.cumsum(widths)])
  density = widths / cdf[-1] / jnp.diff(grid)

  def sample(key, n):
    u = jax.random.uniform(key, (n,)) * cdf[-1]
    cell = jnp.clip(jnp.searchsorted(cdf, u, side="right") - 1, 0, _IS_GRID - 1)
    t = grid[cell] + (u - cdf[cell]) / widths[cell] * (grid[cell + 1] - grid[cell])
    return t, density[cell]

  return sample


def get_sde_loss_fn(sde: sde_lib.SDE, model_score_fn: ModelScoreFn, *, reduce_mean: bool = False,
                    likelihood_weighting: bool = False, importance_sampling: bool = False, eps: float = 1e-5,
                    num_classes: int = 0, label_dropout: float = 0.0, model_key: bool = False) -> Callable:
  """Weighted denoising score matching integrated over t (Song et al. 2021, Eq. 7).

      L(theta) = E_{t ~ U(eps, T)} E_{x0, z} [ w(t) || s_theta(alpha x0 + sigma z, t) + z / sigma ||^2 ]

  with w(t) = sigma(t)^2 by default (so the integrand is ||sigma s_theta + z||^2), or
  w(t) = g(t)^2 with `likelihood_weighting` (then L bounds the KL, Song et al. 2021b). With
  `importance_sampling` too, t is drawn from q(t) ~ g^2 / sigma^2 (`importance_times`) and each
  term is weighted by w(t) / (q(t) (T - eps)): the same expectation, a lower variance (the weight
  becomes proportional to sigma^2, which cancels the 1 / sigma^2 of the score error).

  Class-conditional training: a batch {"x": x [B, ...], "y": labels [B]} (or a tuple (x, y))
  trains s_theta(x, t, y); each label is replaced by the null label `num_classes` with
  probability `label_dropout`, so one network learns both the conditional and the
  unconditional score (classifier-free guidance, Ho & Salimans 2022, Alg. 1). An array
  batch is the unconditional objective, unchanged.

  Args:
    sde: the forward SDE.
    model_score_fn: model_score_fn(params, x, t) -> score.
    reduce_mean: average the squared error over data dimensions instead of summing.
    likelihood_weighting: use w(t) = g(t)^2.
    importance_sampling: draw t from g^2 / sigma^2 (needs likelihood_weighting).
    eps: smallest time sampled, in (0, T).
    num_classes: K, the number of class labels (the null label is K); 0 for unconditional.
    label_dropout: probability of replacing a label by the null label, in [0, 1].
    model_key: call model_score_fn(..., key=k) with a fresh key per step (the network's
      dropout rng); off, no key is passed.

  Returns:
    loss_fn(key, params, batch) -> scalar, the mean over the batch.

  Raises:
    ValueError: eps outside (0, T), bad num_classes / label_dropout, or importance_sampling
      without likelihood_weighting.
  """
  if not 0.0 < eps < sde.T:
    raise ValueError(f"loss.eps={eps!r} must lie in (0, T={sde.T}).")
  _check_labels(num_classes, label_dropout)
  if importance_sampling and not likelihood_weighting:
    raise ValueError("loss.importance_sampling=True needs loss.likelihood_weighting=True (it samples t "
                     "for the weight g(t)^2).")
  reduce = jnp.mean if reduce_mean else jnp.sum
  draw_times = importance_times(sde, eps) if importance_sampling else None

  def loss_fn(key, params, batch):
    batch, y = split_batch(batch)
    extra = {}
    if y is not None:
      extra["y"] = drop_labels(jax.random.fold_in(key, 2), y, num_classes, label_dropout)
    # Three keys only with model_key, so runs without dropout keep their random streams.
    key_t, key_z, *key_m = jax.random.split(key, 3 if model_key else 2)
    if model_key:
      extra["key"] = key_m[0]
    if draw_times is None:
      t = jax.random.uniform(key_t, (batch.shape[0],), minval=eps, maxval=sde.T)
    else:
      t, q = draw_times(key_t, batch.shape[0])
    z = jax.random.normal(key_z, batch.shape)
    mean, std = sde.marginal_prob(batch, t)
    std_b = _bcast(std, batch)
    score = model_score_fn(params, mean + std_b * z, t, **extra)
    axes = tuple(range(1, batch.ndim))
    if draw_times is not None:  # g^2 ||s + z / sigma||^2 / (q (T - eps)), written without 1 / sigma
      losses = reduce((score * std_b + z) ** 2, axis=axes) * sde.diffusion(t) ** 2 / (std**2 * q * (sde.T - eps))
    elif likelihood_weighting:
      losses = reduce((score + z / std_b) ** 2, axis=axes) * sde.diffusion(t) ** 2
    else:
      losses = reduce((score * std_b + z) ** 2, axis=axes)
    return jnp.mean(losses)

  return loss_fn


def _check_labels(num_classes: int, label_dropout: float) -> None:
  if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 0):
    raise ValueError(f"model.num_classes={num_classes!r} must be an integer >= 0.")
  if not 0.0 <= label_dropout <= 1.0:
    raise ValueError(f"loss.label_dropout={label_dropout!r} must lie in [0, 1].")
  if label_dropout > 0 and num_classes == 0:
    raise ValueError(f"loss.label_dropout={label_dropout!r} needs a class-conditional model "
                     "(model.num_classes > 0).")


def split_batch(batch) -> tuple[Array, Array | None]:
  """(x, y) from a batch: an array x (y = None), a dict {"x", "y"} or a tuple (x, y)."""
  if isinstance(batch, dict):
    return batch["x"], batch.get("y")
  if isinstance(batch, (tuple, list)):
    return batch[0], batch[1]
  return batch, None


def drop_labels(key: Array, y: Array, num_classes: int, p: float) -> Array:
  """Each label replaced by the null label `num_classes` with probability p (independently)."""
  if p <= 0:
    return y
  return jnp.where(jax.random.uniform(key, y.shape) < p, num_classes, y).astype(jnp.int32)


def get_classifier_loss_fn(sde: sde_lib.SDE, log_prob_fn: Callable, *, eps: float = 1e-5) -> Callable:
  """Cross-entropy of a noise-conditional classifier on the SDE's perturbed data.

      L(phi) = E_{t ~ U(eps, T)} E_{(x0, c), z} [ -log p_phi(c | alpha_t x0 + sigma_t z, t) ],

  the training objective of the classifier of Song et al. 2021 (App. I.1) and Dhariwal &
  Nichol 2021, whose minimiser is the exact posterior p_t(c | x_t) of the diffused data.

  Args:
    sde: the forward SDE (the same as the score model's).
    log_prob_fn: log_prob_fn(params, x, t) -> [B, K] log-probabilities or logits
      (`models.get_classifier_fn`); a log-softmax is applied either way.
    eps: smallest time sampled, in (0, T).

  Returns:
    loss_fn(key, params, batch) -> scalar mean cross-entropy; batch {"x", "y"} or (x, y).

  Raises:
    ValueError: eps outside (0, T).
  """
  if not 0.0 < eps < sde.T:
    raise ValueError(f"classifier.eps={eps!r} must lie in (0, T={sde.T}).")

  def loss_fn(key, params, batch):
    x0, y = split_batch(batch)
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, (x0.shape[0],), minval=eps, maxval=sde.T)
    mean, std = sde.marginal_prob(x0, t)
    x_t = mean + _bcast(std, x0) * jax.random.normal(key_z, x0.shape)
    log_p = jax.nn.log_softmax(log_prob_fn(params, x_t, t), axis=-1)  # logits or log-probs alike
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None].astype(jnp.int32), axis=1))

  return loss_fn


def _elementwise_loss(err: Array, loss_type: str) -> Array:
  if loss_type == "l2":
    return err**2
  if loss_type == "l1":
    return jnp.abs(err)
  return jnp.where(jnp.abs(err) <= 1.0, 0.5 * err**2, jnp.abs(err) - 0.5)  # Huber, delta = 1


def get_ddpm_loss_fn(schedule: sde_lib.DiscreteSchedule, model_eps_fn: ModelEpsFn, *, loss_type: str = "l2",
                     reduce_mean: bool = True) -> Callable:
  """Ho et al. 2020, Algorithm 1 (L_simple, Eq. 14): t ~ U{1..T}, eps ~ N(0, I),

      L = E_{t, x0, eps} rho( eps - eps_theta(sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps, t) ),

  rho = squared error ("l2"), absolute error ("l1") or Huber with delta = 1 ("huber": e^2 / 2 for
  |e| <= 1, |e| - 1/2 beyond), reduced over the data dimensions by mean or sum.

  Args:
    schedule: the discrete chain.
    model_eps_fn: model_eps_fn(params, x, t_index [B] int) -> eps (e.g. `models.get_eps_fn`).
    loss_type: "l2", "l1" or "huber".
    reduce_mean: average over data dimensions instead of summing.

  Returns:
    loss_fn(key, params, batch) -> scalar (mean over the batch), as `losses.get_sde_loss_fn`, so
    `losses.get_train_step_fn` trains it.

  Raises:
    ValueError: unknown loss_type.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"loss.loss_type={loss_type!r} is unknown; valid: {list(LOSS_TYPES)}.")
  reduce = jnp.mean if reduce_mean else jnp.sum

  def loss_fn(key, params, batch):
    key_t, key_z = jax.random.split(key)
    t = jax.random.randint(key_t, (batch.shape[0],), 1, schedule.T + 1)
    z = jax.random.normal(key_z, batch.shape)
    mean, std = schedule.q_mean_std(batch, t)
    err = model_eps_fn(params, mean + _bcast(std, batch) * z, t) - z
    return jnp.mean(reduce(_elementwise_loss(err, loss_type), axis=tuple(range(1, batch.ndim))))

  return loss_fn


def get_smld_loss_fn(sigmas, model_score_fn: Callable, *, reduce_mean: bool = False) -> Callable:
  """NCSN's denoising score matching over a noise ladder (Song & Ermon 2019, Eq. 5-6):

      L = 1/L sum_i lambda(sigma_i) l(theta; sigma_i),
      l(theta; sigma) = 1/2 E || s_theta(x~, sigma) + (x~ - x) / sigma^2 ||^2,

  x~ = x + sigma z, with lambda(sigma) = sigma^2, so each term is 1/2 E || sigma s_theta + z ||^2.
  One level per example, uniform over the ladder: an unbiased estimate of the average over i.

  Args:
    sigmas: the ladder [L] (e.g. `sde_lib.geometric_sigmas`), each > 0.
    model_score_fn: model_score_fn(params, x, sigma [B]) -> score (e.g. `models.get_smld_score_fn`).
    reduce_mean: average over data dimensions instead of summing.

  Returns:
    loss_fn(key, params, batch) -> scalar, the mean over the batch.

  Raises:
    ValueError: an empty ladder or a non-positive sigma.
  """
  sig = np.asarray(sigmas, np.float64)
  if sig.ndim != 1 or sig.size < 1 or not np.all(sig > 0):
    raise ValueError(f"sigmas must be a 1-D ladder of positive noise levels; got {sig.tolist()!r}.")
  sig = jnp.asarray(sig, jnp.float32)
  reduce = jnp.mean if reduce_mean else jnp.sum

  def loss_fn(key, params, batch):
    key_i, key_z = jax.random.split(key)
    sigma = sig[jax.random.randint(key_i, (batch.shape[0],), 0, sig.shape[0])]
    z = jax.random.normal(key_z, batch.shape)
    s = _bcast(sigma, batch)
    score = model_score_fn(params, batch + s * z, sigma)
    return jnp.mean(0.5 * reduce((s * score + z) ** 2, axis=tuple(range(1, batch.ndim))))

  return loss_fn


def _sde_loss(sde: sde_lib.SDE, score_model: models.ScoreModel, /, *, num_classes: int = 0, reduce_mean: bool = False,
              likelihood_weighting: bool = False, importance_sampling: bool = False, eps: float = 1e-5,
              label_dropout: float = 0.0) -> Callable:
  """The continuous DSM loss of a score model (`get_sde_loss_fn`); dropout keys when the network has dropout."""
  return get_sde_loss_fn(sde, score_model.train_score_fn, reduce_mean=reduce_mean,
                         likelihood_weighting=likelihood_weighting, importance_sampling=importance_sampling, eps=eps,
                         num_classes=num_classes, label_dropout=label_dropout, model_key=score_model.dropout > 0)


def _ddpm_loss(sde: sde_lib.SDE, score_model: models.ScoreModel, /, *, num_classes: int = 0, loss_type: str = "l2",
               reduce_mean: bool = True) -> Callable:
  """L_simple of the SDE's DDPM chain (`get_ddpm_loss_fn`) on the network's eps, conditioned on step / T."""
  if score_model.dropout:
    raise ValueError(f"model.dropout={score_model.dropout} is not supported with loss.name='ddpm'; set it to 0.")
  if num_classes:
    raise ValueError(f"model.num_classes={num_classes} needs loss.name='sde' (the class-conditional DSM loss); "
                     "got loss.name='ddpm'.")
  schedule = sde_lib.schedule_of(sde)
  return get_ddpm_loss_fn(schedule, models.get_eps_fn(score_model.network, schedule), loss_type=loss_type,
                          reduce_mean=reduce_mean)


LOSSES = Registry("loss", "name")
LOSSES.register("sde", _sde_loss)
LOSSES.register("ddpm", _ddpm_loss)
LOSSES.register("vdm", vdm.vdm_loss)


def get_loss_fn(sde: sde_lib.SDE, score_model: models.ScoreModel, *, name: str = "sde", num_classes: int = 0,
                **fields) -> Callable:
  """The consumer of the config's `loss` group: the objective `name` ("sde": continuous DSM,
  "ddpm": DDPM's L_simple, "vdm": the variational bound) for `score_model`, with the group's
  other fields.

  Raises:
    ValueError: unknown name or field, or a bad value.
  """
  return LOSSES.build(name, sde, score_model, num_classes=num_classes, **fields)


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries between steps: one pytree."""

  step: Array
  params: Any
  ema_params: Any
  opt_state: Any


def get_optimizer(*, lr: float = 2e-3, warmup_steps: int = 100, schedule: str = "cosine",
                  total_steps: int = 10_000, final_lr_ratio: float = 0.0, grad_clip: float = 1.0,
                  beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                  weight_decay: float = 0.0) -> optax.GradientTransformation:
  """One optax chain: global-norm clipping, then Adam(W) with linear warmup and a decay.

  The learning rate rises linearly from 0 to `lr` over `warmup_steps`, then stays
  ("constant") or decays to `final_lr_ratio * lr` at `total_steps` ("cosine", "linear").

  Raises:
    ValueError: an unknown schedule or a non-positive lr.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={schedule!r} is unknown; valid: {list(SCHEDULES)}.")
  checks = [("lr", lr, lr > 0, "must be > 0"),
            ("warmup_steps", warmup_steps, isinstance(warmup_steps, int) and warmup_steps >= 0, "must be an integer >= 0"),
            ("final_lr_ratio", final_lr_ratio, 0.0 <= final_lr_ratio <= 1.0, "must lie in [0, 1]"),
            ("grad_clip", grad_clip, grad_clip >= 0, "must be >= 0 (0 disables clipping)"),
            ("beta1", beta1, 0.0 <= beta1 < 1.0, "must lie in [0, 1)"),
            ("beta2", beta2, 0.0 <= beta2 < 1.0, "must lie in [0, 1)"),
            ("eps", eps, eps > 0, "must be > 0"),
            ("weight_decay", weight_decay, weight_decay >= 0, "must be >= 0")]
  for name, value, ok, allowed in checks:
    if not ok:
      raise ValueError(f"optim.{name}={value!r} {allowed}.")
  warmup = optax.linear_schedule(0.0, lr, max(warmup_steps, 1))
  decay_steps = max(total_steps - warmup_steps, 1)
  if schedule == "constant":
    after = optax.constant_schedule(lr)
  elif schedule == "cosine":
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=final_lr_ratio)
  else:
    after = optax.linear_schedule(lr, lr * final_lr_ratio, decay_steps)
  lr_fn = optax.join_schedules([warmup, after], [max(warmup_steps, 1)])
  clip = optax.clip_by_global_norm(grad_clip) if grad_clip > 0 else optax.identity()
  return optax.chain(clip, optax.adamw(lr_fn, b1=beta1, b2=beta2, eps=eps, weight_decay=weight_decay))


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  """Step 0 state; EMA starts at the initial parameters."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=optimizer.init(params))


def get_train_step_fn(loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                      ema_rate: float = 0.999, ema_warmup: bool = True) -> Callable:
  """Returns the pure train_step(state, batch, key) -> (state, metrics).

  The step's key is fold_in(key, state.step), so a resumed run draws the same noise as an
  uninterrupted one. EMA: ema <- r ema + (1 - r) params, with r = min(ema_rate,
  (1 + step) / (10 + step)) under `ema_warmup`, so short runs are not dominated by the init.

  Raises:
    ValueError: ema_rate outside [0, 1).
  """
  if not 0.0 <= ema_rate < 1.0:
    raise ValueError(f"training.ema_rate={ema_rate!r} must lie in [0, 1).")

  def train_step(state: TrainState, batch: Array, key: Array):
    step_key = jax.random.fold_in(key, state.step)
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(step_key, state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    rate = ema_rate
    if ema_warmup:
      step = state.step.astype(jnp.float32)
      rate = jnp.minimum(ema_rate, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, state.ema_params, params)
    new_state = TrainState(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

  return train_step


@dataclasses.dataclass(frozen=True)
class ClassifierSetup:
  """A noise-conditional classifier ready to train: network, log_prob_fn(params, x, t) -> [B, K],
  optimizer, the pure train_step, and its loop settings."""

  network: Any
  log_prob_fn: Callable
  optimizer: optax.GradientTransformation
  train_step: Callable
  n_iters: int
  batch_size: int
  log_freq: int


def get_classifier_setup(sde: sde_lib.SDE, num_classes: int, /, *, model: dict, optim: dict, n_iters: int,
                         batch_size: int, log_freq: int, conditioning: str = "auto", input_scaling: bool = True,
                         eps: float = 1e-5) -> ClassifierSetup:
  """The consumer of the config's `classifier` group: the network (`models.get_classifier(**model)`),
  its cross-entropy on the SDE's perturbed labelled data (`get_classifier_loss_fn`), the optimizer
  (`get_optimizer(**optim)`) and the loop lengths.

  Raises:
    ValueError: an unknown or bad field.
  """
  for name, value in (("n_iters", n_iters), ("batch_size", batch_size), ("log_freq", log_freq)):
    check_int(f"classifier.{name}", value, 1)
  network = models.get_classifier(num_classes=num_classes, **model)
  log_prob_fn = models.get_classifier_fn(sde, network, conditioning=conditioning, input_scaling=input_scaling)
  optimizer = get_optimizer(total_steps=n_iters, **optim)
  train_step = get_train_step_fn(get_classifier_loss_fn(sde, log_prob_fn, eps=eps), optimizer, ema_rate=0.0,
                                 ema_warmup=False)
  return ClassifierSetup(network, log_prob_fn, optimizer, train_step, n_iters, batch_size, log_freq)


def get_cross_entropy_loss_fn(logits_fn: Callable) -> Callable:
  """The mean cross-entropy -log softmax(logits_fn(params, x))[y] of a labelled batch {"x", "y"}.

  Returns:
    loss_fn(key, params, batch) -> scalar (key unused), for `get_train_step_fn`.
  """

  def loss_fn(key, params, batch):
    del key
    x, y = split_batch(batch)
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()

  return loss_fn
