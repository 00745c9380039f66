"""Four 2-D particles invariant under rotations, reflections, permutations and translations.

    python run.py --config=configs/sym_particles_e2.py          # EGNN (E(2)-equivariant)
    python run.py --config=configs/sym_particles_e2.py:mlp      # plain MLP, the same parameter budget
    python run.py --config=configs/sym_particles_e2.py:deepsets # permutation-equivariant only

datasets.E2Particles: the average over all rotations, both reflections and the 24 orderings of an
isotropic Gaussian (std 0.2) around one configuration, on the zero-CoM coordinates (6-D); its
density and score are closed form (Bessel I_0). Measured figures: benchmarks/RESULTS.md
("Symmetry: equivariant scores on symmetric targets").
"""

import ml_collections

from configs import sym_particles


def get_config(model: str = "egnn"):
  config = sym_particles.get_config(model)
  config.data = ml_collections.ConfigDict(dict(name="sym_particles_e2", std=0.2, reflections=True))
  config.model = sym_particles.point_set_model(model, com_free=True)
  return config
