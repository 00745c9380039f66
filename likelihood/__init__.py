"""Likelihoods: exact log-likelihoods through the probability-flow ODE (`ode`), bits/dim of
integer-level data by dequantisation (`dequantize`), the DDPM variational bound (`vlb`) and the
continuous-time variational bound in the signal-to-noise view (`elbo`)."""

from likelihood.elbo import (ELBO_DECODERS, ELBO_T_SAMPLING, diffusion_integrand, eps_error, gamma_fn, get_elbo_fn,
                            reconstruction_nll)
from likelihood.dequantize import bits_per_dim, dequantization_offset, dequantize, dequantized_bits_per_dim
from likelihood.ode import (HUTCHINSON_TYPES, gaussian_prior_kl, get_likelihood_fn, prior_kl,
                            prior_mismatch)
from likelihood.vlb import (DECODERS, discretized_gaussian_log_likelihood, gaussian_nll, get_vlb_fn, normal_kl,
                            vlb_summary)

__all__ = ["ELBO_DECODERS", "ELBO_T_SAMPLING", "eps_error", "get_elbo_fn", "diffusion_integrand", "gamma_fn", "reconstruction_nll", "HUTCHINSON_TYPES", "DECODERS", "get_likelihood_fn", "prior_mismatch", "prior_kl", "gaussian_prior_kl",
           "bits_per_dim", "dequantization_offset", "dequantize", "dequantized_bits_per_dim", "get_vlb_fn",
           "vlb_summary", "normal_kl", "gaussian_nll", "discretized_gaussian_log_likelihood"]
