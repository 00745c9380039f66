"""Four 2-D particles, the mixture of the 24 orderings of one configuration (8-D, 24 components).

    python run.py --config=configs/sym_particles.py            # DeepSets (permutation-equivariant)
    python run.py --config=configs/sym_particles.py:mlp        # plain MLP, the same parameter budget
    python run.py --config=configs/sym_particles.py:sym_mlp    # the MLP averaged over S_4 (24 evaluations)

The target (datasets.PermutedParticles) is invariant under permutations of the particles only (an
anisotropic per-particle covariance and a fixed orientation), so E(n)-equivariant networks do not
fit it; see sym_particles_com.py and sym_particles_e2.py. Every network has about 40k parameters
(MLP hidden 64, DeepSets hidden 56, EGNN hidden 39, depth 3). Measured figures:
benchmarks/RESULTS.md ("Symmetry: equivariant scores on symmetric targets").
"""

import ml_collections

from configs.default_toy import get_default_configs

N_PARTICLES = 4
# Hidden widths with the same parameter count (within 1%) for 6- and 8-D inputs, depth 3.
WIDTHS = {"mlp": 64, "sym_mlp": 64, "deepsets": 56, "egnn": 39}


def point_set_model(name: str, *, com_free: bool) -> ml_collections.ConfigDict:
  """The model group of network `name` ("mlp", "sym_mlp", "deepsets" or "egnn") for 4 particles in 2-D."""
  if name not in WIDTHS:
    raise ValueError(f"the config argument {name!r} is not a network; valid: {sorted(WIDTHS)}.")
  model = dict(name=name, hidden=WIDTHS[name], depth=3, embed_dim=32, fourier_scale=1.0,
               parameterization="eps", conditioning="auto", input_scaling=True)
  if name == "sym_mlp":
    model.update(symmetry="permutation", n_particles=N_PARTICLES, particle_dim=2, com_free=com_free)
  elif name != "mlp":
    model.update(n_particles=N_PARTICLES, particle_dim=2, com_free=com_free)
  return ml_collections.ConfigDict(model)


def get_config(model: str = "deepsets"):
  config = get_default_configs()
  config.data = ml_collections.ConfigDict(dict(name="sym_particles", com_free=False))
  config.model = point_set_model(model, com_free=False)
  return config
