"""Fine-tune (or train from scratch) a BERT classifier on IMDB.

    python train.py --config configs/imdb_minilm.py --workdir runs/minilm \
        --config.optimizer.learning_rate=3e-5

Rerunning the same command resumes from the latest checkpoint in the workdir. Ctrl-C or SIGTERM
saves a checkpoint, then exits with status 130 or 143; bad input ends in one `error:` line.
"""

from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxformer.runtime import malloc
from jaxformer.training import cli, loop, processes

FLAGS = flags.FLAGS
malloc.define_flag()
cli.define_distributed_flags()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and exports.")
config_flags.DEFINE_config_file(
    "config",
    str(Path(__file__).parent / "configs" / "imdb_minilm.py"),
    "Experiment config file; override fields with --config.x=y.",
    lock_config=True,
)
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    malloc.reuse_freed_memory(FLAGS.malloc)  # before any jax computation
    cli.initialize_distributed()
    processes.quiet_library_logs()
    logging.info("JAX devices: %s", jax.devices())
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main)
