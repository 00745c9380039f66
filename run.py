"""Command line: python run.py --config=configs/ve_gmm.py [--workdir=DIR] [--mode=all].

Flags only; all logic lives in run_lib. Config fields can be overridden with
--config.training.n_iters=500 and similar; list fields with a Python literal or comma-separated words:
--config.data.weights="[0.5, 0.3, 0.2]", --config.eval.evaluators=samples,plots.
"""

import ast
import difflib
import importlib.util
import logging as pylogging
import os
import pathlib
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS


def _env_int(name):
  value = os.environ.get(name)
  return int(value) if value else None


class ListParser(flags.ArgumentParser):
  """Parses an override of a list field (ml_collections overrides tuples but not lists): a Python literal
  ("[0.5, 0.3, 0.2]", "[[1.0, 0.0], [0.0, 1.0]]"; a single value becomes a list of one) or words
  separated by commas ("samples,plots")."""

  def parse(self, argument):
    if isinstance(argument, (list, tuple)):
      return list(argument)
    try:
      value = ast.literal_eval(argument.strip())
    except (ValueError, SyntaxError):
      value = [word.strip() for word in argument.split(",") if word.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]

  def flag_type(self):
    return "list"


config_flags.register_flag_parser_for_type(list, ListParser())
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default runs/<config file stem>).")
flags.DEFINE_enum("mode", "all", ["train", "train_classifier", "eval", "sample", "all"],
                  "What to run (train_classifier: the noise-conditional classifier of the config's "
                  "`classifier` group, for classifier guidance).")
flags.DEFINE_string("jax_cache_dir", os.path.expanduser("~/.cache/score_sde_jax"),
                    "Persistent XLA compilation cache (reruns skip compiling); empty to disable.")
flags.DEFINE_bool("multihost", False, "Join a multi-process run with jax.distributed.initialize.")
flags.DEFINE_string("coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
                    "host:port of process 0 (default $JAX_COORDINATOR_ADDRESS, else auto-detected).")
flags.DEFINE_integer("num_processes", _env_int("JAX_NUM_PROCESSES"),
                     "Number of processes (default $JAX_NUM_PROCESSES, else auto-detected).")
flags.DEFINE_integer("process_id", _env_int("JAX_PROCESS_ID"),
                     "This process's id (default $JAX_PROCESS_ID, else auto-detected).")
flags.mark_flags_as_required(["config"])


def _quiet_info(record) -> bool:
  """Drops two kinds of INFO noise; warnings and errors always pass. orbax logs every save and
  restore at INFO; JAX logs at INFO each optional backend it probes and does not find (TPU:
  "Unable to initialize backend 'tpu'" without libtpu). A backend that is present but broken is
  a JAX warning or error, so it still shows."""
  if record.levelno >= pylogging.WARNING:
    return True
  if "orbax" in record.pathname:
    return False
  return not (record.name.startswith("jax._src.xla_bridge")
              and str(record.msg).startswith("Unable to initialize backend"))


def main(argv):
  del argv
  import jax
  import run_lib

  if FLAGS.multihost:
    # Unset fields are auto-detected by JAX on SLURM, Open MPI, TPU pods and Kubernetes.
    kwargs = {k: v for k, v in (("coordinator_address", FLAGS.coordinator_address),
                                ("num_processes", FLAGS.num_processes),
                                ("process_id", FLAGS.process_id)) if v is not None}
    jax.distributed.initialize(**kwargs)
    logging.info("Process %d of %d; %d local of %d devices.", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
  if FLAGS.jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", FLAGS.jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  config_path = config_flags.get_config_filename(FLAGS["config"])
  workdir = FLAGS.workdir or os.path.join("runs", pathlib.Path(config_path).stem)
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_quiet_info)
  try:
    out = run_lib.run(FLAGS.config, workdir, FLAGS.mode)
  except ValueError as e:  # bad input: one line, no traceback
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except run_lib.Preempted as e:  # not finished: a non-zero status so schedulers requeue
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signum)
  except run_lib.TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  for line in summary_lines(out, workdir):
    print(line)


def summary_lines(out: dict, workdir: str) -> list[str]:
  """The lines run.py prints at the end of a run from run_lib.run's output."""
  lines = []
  if "sample" in out:
    lines.append(f"samples (nfe {out['sample']['nfe']}) in {out['sample']['path']}")
  if "eval" in out and "energy_ratio" not in out["eval"]:  # images
    ev, parts = out["eval"], [f"nfe {out['eval']['nfe']}"]
    if "bits_per_dim" in ev:
      parts.append(f"test bits/dim {ev['bits_per_dim']['bpd']:.3f} +- {ev['bits_per_dim']['bpd_stderr']:.3f}")
    if "frechet" in ev:
      fd = ev["frechet"]
      parts.append(f"Frechet distance {fd['fd']:.3f} (train-vs-test floor {fd['fd_floor']:.3f}; classifier "
                   f"test accuracy {fd['classifier_test_accuracy']:.3f})")
    lines.append("; ".join(parts) + f"; grid in {workdir}/plots/samples_grid.png; summary in "
                 f"{workdir}/eval/summary.json")
    pc = ev.get("per_class")
    if pc and "classifier_accuracy" in pc:
      fd = f"; pooled Frechet distance {pc['frechet']['fd']:.3f}" if "frechet" in pc else ""
      lines.append(f"class-conditional (w = {pc['guidance_w']}): samples classified as their class "
                   f"{pc['classifier_accuracy']:.3f}{fd}; grid (a row per class) in {workdir}/plots/class_grid.png")
  elif "eval" in out:
    ev = out["eval"]
    kl = ev.get("sampler_kl", {})
    exact = "".join(f"; exact sampler KL, {name} score: {r['kl']:.2e} +- {r['se']:.1e} nats"
                    + (f" (not a KL: it folds {r['folded']:.1%} of the latents)" if r["folded"] else "")
                    for name, r in kl.items())
    lines.append(f"energy distance {ev['model']['energy_distance']:.3e} = {ev['energy_ratio']:.2f}x floor "
                 f"({ev['floor']['energy_distance']:.3e}); nfe {ev['nfe']}{exact}; summary in "
                 f"{workdir}/eval/summary.json")
    for label, row in ev.get("per_class", {}).items():
      ratios = ", ".join(f"{name} {v['energy_ratio']:.2f}x" for name, v in row.items() if name != "floor")
      lines.append(f"class {label}: energy distance / floor: {ratios}")
  return lines


def _config_spec(argv) -> str | None:
  """The value of the last --config (a file path, optionally followed by ":argument")."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def unknown_field(config, path: str) -> str | None:
  """The one-line error for an override of a field `path` ("training.n_iter") the config lacks,
  with the closest existing field; None when every part of `path` exists."""
  parts, node = path.split("."), config
  for i, part in enumerate(parts):
    if not hasattr(node, "keys"):  # a list or tuple field indexed by number: config_flags checks it
      return None
    keys = sorted(node.keys())
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
      if close:
        return f"unknown config field {path}; did you mean {'.'.join(parts[:i] + close + parts[i + 1:])}?"
      return f"unknown config field {path}; the fields of {'.'.join(parts[:i]) or 'the config'} are {keys}"
    node = node[part]
  return None


def _load_config(spec: str):
  """get_config() of a config file, loaded as config_flags does (for the error message only)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_config_for_error", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _flag_error(e: Exception, argv) -> str:
  """One line for a failed flag parse: a missing config file, an unknown override, or e's text."""
  spec = _config_spec(argv)
  if spec is not None and not os.path.isfile(spec.partition(":")[0]):
    return f"--config={spec}: no such config file (cwd {os.getcwd()})"
  if spec is not None and isinstance(e, (AttributeError, KeyError)):
    try:
      config = _load_config(spec)
    except Exception:  # the file itself is broken: config_flags's own message says how
      config = None
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    for path in overrides if config is not None else ():
      message = unknown_field(config, path)
      if message:
        return message
  return " ".join(str(e).split())


def parse_flags(argv):
  """absl flag parsing with one-line errors (a missing or broken config file, a bad override)."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # config_flags defers a file's load error until first access
    return rest
  except Exception as e:  # absl and config_flags raise several types; none needs a traceback
    print(f"error: {_flag_error(e, argv)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
