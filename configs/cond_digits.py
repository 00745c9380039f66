"""Class-conditional VP SDE on the 8x8 sklearn digits: one U-Net for the ten classes and the null label.

    python run.py --config=configs/cond_digits.py

As vp_digits, with a label embedding (model.num_classes = 10, null label 10) trained with label
dropout 0.1, so the same network gives the conditional and the unconditional score. Eval: the
vp_digits metrics for unconditional (null-label) samples, then eval.n_class_samples samples per
class with classifier-free guidance at guidance.w ((1 + w) s(x, t, c) - w s(x, t, null)),
plots/class_grid.png with one row per class, the digits classifier's accuracy on each class's
samples and the pooled Frechet distance (eval/summary.json "per_class"; README "Images").
"""

import ml_collections

from configs.default_digits import get_default_configs


def get_config():
  config = get_default_configs()
  config.model.num_classes = 10
  config.loss.label_dropout = 0.1
  config.guidance = ml_collections.ConfigDict(dict(w=1.0))
  config.eval.evaluators = ["image_samples", "bits_per_dim", "frechet", "class_images", "image_plots"]
  config.eval.n_class_samples = 150  # 10 x 150 = 1,500 pooled samples, the floor's set size
  return config
