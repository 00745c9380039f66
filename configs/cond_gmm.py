"""Class-conditional VP SDE on a 3-component 2-D Gaussian mixture; labels = mixture components.

    python run.py --config=configs/cond_gmm.py

Trains a class-conditional MLP with label dropout 0.1 (one network for the conditional and the
null-label score), then a noise-conditional classifier (workdir/classifier/, also alone with
--mode=train_classifier), then evaluates: unconditional samples (null label) as every toy
config, and per class (eval/summary.json "per_class", plots/samples_class_<k>.png) the energy
distance to that component, against its floor, of classifier-free guided samples
(guidance.w; 0 = the conditional score), classifier-guided samples
(guidance.classifier_scale) and the same two with exact scores (eval.oracle). Measured per-class
figures are in benchmarks/RESULTS.md ("Conditional generation").
"""

import ml_collections

from configs.default_toy import get_default_configs

MEANS = ((-2.0, 0.0), (2.0, 0.0), (0.0, 2.0))
COVS = (((1.0, 0.3), (0.3, 0.5)), ((0.5, 0.0), (0.0, 1.0)), ((1.0, -0.4), (-0.4, 0.6)))
WEIGHTS = (0.3, 0.3, 0.4)


def get_config():
  config = get_default_configs()
  config.sde = ml_collections.ConfigDict(dict(name="vpsde", beta_min=0.1, beta_max=20.0, N=500))
  config.data.update(dict(means=[list(m) for m in MEANS], covs=[[list(r) for r in c] for c in COVS],
                          weights=list(WEIGHTS)))
  config.model.num_classes = len(MEANS)
  config.loss.label_dropout = 0.1
  config.guidance = ml_collections.ConfigDict(dict(w=0.0, classifier_scale=1.0))
  config.eval.evaluators = ["samples", "score_error", "per_class", "plots"]
  config.eval.n_class_samples = 2000
  del config.eval["nll_samples"]
  config.classifier = ml_collections.ConfigDict(dict(
      model=dict(name="mlp", hidden=64, depth=2, embed_dim=32, fourier_scale=1.0),
      conditioning="auto", input_scaling=True, eps=1e-5,
      optim=dict(lr=3e-3, warmup_steps=100, schedule="cosine", final_lr_ratio=0.01, grad_clip=1.0),
      n_iters=2000, batch_size=512, log_freq=250))
  return config
