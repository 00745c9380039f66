"""The feature network of the digits Frechet distance, trained with the project's loop."""

from __future__ import annotations

import dataclasses
import numbers

import jax
import jax.numpy as jnp
import numpy as np
import optax

import losses
import train
from models import digits

Array = jax.Array


def _batch_fn(data, key, n):
  """n images with their labels, drawn with replacement from data = (x, y)."""
  x, y = data
  idx = jax.random.randint(key, (n,), 0, x.shape[0])
  return {"x": x[idx], "y": y[idx]}


def _fit(key, x, y, learning_rate: float, feature_dim: int, n_steps: int, batch_size: int):
  """The trained parameters: n_steps Adam steps on minibatches from fold_in(key_data, step)."""
  net = digits.DigitsNet(feature_dim)
  key_init, key_data = jax.random.split(key)
  x, y = jnp.asarray(x), jnp.asarray(y)
  optimizer = optax.adam(learning_rate)
  loss_fn = losses.get_cross_entropy_loss_fn(lambda p, x_: net.apply({"params": p}, x_)[0])
  step = losses.get_train_step_fn(loss_fn, optimizer, ema_rate=0.0, ema_warmup=False)
  state = losses.init_train_state(net.init(key_init, x[:1])["params"], optimizer)
  job = train.Job(step, _batch_fn, (x, y), key_data, key_data, kind="digits_classifier")
  return train.fit(job, n_steps, batch_size, state).params


def train_digits_classifier(key: Array, x_train, y_train, x_test, y_test, *,
                            data_range: tuple[float, float] = (0.0, 16.0), n_steps: int = 600,
                            batch_size: int = 128, learning_rate: float = 2e-3,
                            feature_dim: int = 64) -> digits.DigitsClassifier:
  """Trains `models.digits.DigitsNet` on the train split with Adam on the mean cross-entropy of
  random minibatches (with replacement), then measures it on the test split.

  Args:
    key: PRNG key (initialisation and minibatches).
    x_train: images [n, 8, 8, 1] (or [n, 8, 8], [n, 64]) with values in data_range.
    y_train: labels [n] in 0..9.
    x_test, y_test: the held-out split, same formats.
    data_range: (lo, hi) of the image values: (0, 16) for raw sklearn digits, (-1, 1) for a
      model's data; mapped to [0, 1] inside.
    n_steps: Adam steps.
    batch_size: minibatch size.
    learning_rate: Adam step size.
    feature_dim: width of the feature layer.

  Returns:
    The `DigitsClassifier`, with test_accuracy and train_accuracy filled in.

  Raises:
    ValueError: malformed images or labels, or hyperparameters out of range.
  """
  data_range = digits.check_range(data_range)
  for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("feature_dim", feature_dim)):
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1):
      raise ValueError(f"classifier.{name}={value!r} must be an integer >= 1.")
  if not (isinstance(learning_rate, numbers.Real) and learning_rate > 0):
    raise ValueError(f"classifier.learning_rate={learning_rate!r} must be > 0.")
  x_tr, x_te = digits.images(x_train, "x_train"), digits.images(x_test, "x_test")
  y_tr, y_te = digits.labels(y_train, len(x_tr), "y_train"), digits.labels(y_test, len(x_te), "y_test")
  params = _fit(key, digits.to_unit(x_tr, data_range), y_tr, float(learning_rate), int(feature_dim),
                int(n_steps), int(batch_size))
  clf = digits.DigitsClassifier(params, data_range, int(feature_dim), float("nan"), float("nan"))
  return dataclasses.replace(clf, test_accuracy=clf.accuracy(x_te, y_te),
                             train_accuracy=clf.accuracy(x_tr, y_tr))
