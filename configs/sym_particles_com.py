"""The 4-particle permutation mixture of sym_particles.py without its centre of mass (6-D).

    python run.py --config=configs/sym_particles_com.py          # DeepSets on the zero-CoM coordinates
    python run.py --config=configs/sym_particles_com.py:mlp      # plain MLP, the same parameter budget
    python run.py --config=configs/sym_particles_com.py:egnn     # EGNN: E(2)-equivariant, misspecified here

The data are the orthonormal zero-CoM coordinates u = H X (datasets.symmetric.com_basis) of the
permuted mixture, a 24-component Gaussian mixture on the 6-D subspace. It is invariant under
permutations but not under rotations, so the EGNN, which can only output rotation-equivariant
scores, cannot reach it: that case is reported as the misspecified one in benchmarks/RESULTS.md.
"""

from configs import sym_particles


def get_config(model: str = "deepsets"):
  config = sym_particles.get_config(model)
  config.data.com_free = True
  config.model = sym_particles.point_set_model(model, com_free=True)
  return config
