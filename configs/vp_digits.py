"""VP SDE (beta 0.1 to 20) on the 8x8 sklearn digits with a small U-Net.

    python run.py --config=configs/vp_digits.py

Trains 4,000 steps of batch 128, then samples 1,500 digits with DPM-Solver++ 2M (50 NFE),
writes plots/samples_grid.png, the test-split bits/dim and the classifier Frechet distance
with its train-vs-test floor to eval/summary.json. Under 20 minutes on a 2-core CPU
(measured figures: README "Images").
"""

from configs.default_digits import get_default_configs


def get_config():
  return get_default_configs()
