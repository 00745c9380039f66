"""C_5-symmetric ring mixture: the MLP averaged over the rotations by 2 pi j / 5 (models.SymmetricMLP).

    python run.py --config=configs/sym_ring.py                              # symmetric
    python run.py --config=configs/sym_ring.py --config.model.symmetry=none # plain MLP, same parameters

Five tilted anisotropic Gaussians on a circle of radius 2 (datasets.RingMixture: C_5 but no
reflection); VE SDE, 5,000 steps, PC sampling, energy distance against its floor and the exact NLL as
in ve_gmm. Group averaging costs 5 network evaluations per score. Symmetric against plain at equal
steps: benchmarks/RESULTS.md ("Symmetry: equivariant scores on symmetric targets").
"""

import ml_collections

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.data = ml_collections.ConfigDict(dict(name="sym_ring", k=5, radius=2.0, radial_std=0.5,
                                               tangential_std=0.15, tilt=0.6))
  config.model.update(dict(name="sym_mlp", symmetry="cyclic", k=5))
  return config
