"""Command line: python run.py --config=configs/ve_gmm.py [--workdir=DIR] [--mode=all].

Flags only; all logic lives in run_lib. Config fields can be overridden with
--config.training.n_iters=500 and similar.
"""

import logging as pylogging
import os
import pathlib
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default runs/<config file stem>).")
flags.DEFINE_enum("mode", "all", ["train", "eval", "sample", "all"], "What to run.")
flags.DEFINE_string("jax_cache_dir", os.path.expanduser("~/.cache/score_sde_jax"),
                    "Persistent XLA compilation cache (reruns skip compiling); empty to disable.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  import jax
  import run_lib

  if FLAGS.jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", FLAGS.jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  config_path = config_flags.get_config_filename(FLAGS["config"])
  workdir = FLAGS.workdir or os.path.join("runs", pathlib.Path(config_path).stem)
  logging.set_verbosity(logging.INFO)
  # orbax logs every save and restore at INFO; keep its warnings only.
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= pylogging.WARNING or "orbax" not in record.pathname)
  try:
    out = run_lib.run(FLAGS.config, workdir, FLAGS.mode)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if "eval" in out:
    ev = out["eval"]
    print(f"energy distance {ev['model']['energy_distance']:.3e} = {ev['energy_ratio']:.2f}x floor "
          f"({ev['floor']['energy_distance']:.3e}); nfe {ev['nfe']}; summary in {workdir}/eval/summary.json")


if __name__ == "__main__":
  app.run(main)
