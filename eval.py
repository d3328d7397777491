"""Evaluate a trained model on a split of its task's data and write workdir/eval_<split>.json.

python eval.py --workdir runs/minilm --split test              # best checkpoint
python eval.py --workdir runs/minilm --split test --step 700   # another step
python eval.py --hf_dir runs/minilm/hf_export --split test     # an exported HF folder
python eval.py --workdir runs/tickets --split test --file test.csv   # rows of another file
"""

import json

from absl import app, flags

from jaxformer.runtime import malloc
from jaxformer.training import cli, evaluate, processes

FLAGS = flags.FLAGS
malloc.define_flag()
cli.define_distributed_flags()
flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints).")
flags.DEFINE_string("hf_dir", None, "Hugging Face folder to evaluate instead of a checkpoint.")
flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "The split to evaluate.")
flags.DEFINE_string(
    "file",
    None,
    "The split's rows from this file (any format training reads) instead of the "
    "config's data.<split>_file.",
)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the workdir.")
flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step instead.")
flags.DEFINE_integer("limit", None, "Only the first N examples of the split (seeded subset).")
flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: the config's).")
flags.DEFINE_bool("json", False, "Print the metrics as JSON instead of a table.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    malloc.reuse_freed_memory(FLAGS.malloc)  # before any jax computation
    cli.initialize_distributed()
    processes.quiet_library_logs()
    metrics = evaluate.evaluate_split(
        FLAGS.workdir,
        FLAGS.split,
        FLAGS.checkpoint,
        FLAGS.step,
        FLAGS.hf_dir,
        FLAGS.limit,
        FLAGS.batch_size,
        FLAGS.file,
    )
    print(json.dumps(metrics, indent=2) if FLAGS.json else evaluate.format_metrics(metrics))


if __name__ == "__main__":
    cli.run(main)
