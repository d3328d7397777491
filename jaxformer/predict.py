"""Predict with a trained model, one line of output per input: a review's label, a sentence's
named entities, or a question's answer in its context.

python -m jaxformer.predict --workdir runs/minilm "A wonderful, moving film."
python -m jaxformer.predict --workdir runs/minilm --file reviews.txt   # one review a line
cat reviews.txt | python -m jaxformer.predict --hf_dir runs/minilm/hf_export
python -m jaxformer.predict --workdir runs/ner "George Washington went to Washington."
python -m jaxformer.predict --workdir runs/squad --question "Who wrote it?" \
    --context "The book was written by Jane Austen in 1813."
python -m jaxformer.predict --workdir runs/tickets --input_file=new.csv --output_file=preds.csv

With --input_file (CSV, TSV, JSON Lines, Parquet, text), each row is written to --output_file
(any of those formats but text) with its prediction beside it (jaxformer.training.prediction).
"""

import os
import sys

from absl import app, flags

from jaxformer import tasks
from jaxformer.training import cli, evaluate, prediction

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("hf_dir", None, "Hugging Face folder instead of a workdir.")
flags.DEFINE_enum(
    "task",
    None,
    ["classification", "token_classification", "question_answering"],
    "The task of an --hf_dir given without a workdir (default: classification).",
)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the workdir.")
flags.DEFINE_string(
    "file",
    None,
    "Read inputs from this file, one per line (question answering: "
    'JSON lines {"question": ..., "context": ...}).',
)
flags.DEFINE_string(
    "input_file",
    None,
    "Rows to predict (CSV, TSV, JSON Lines, Parquet, text), read with the "
    "columns training named; needs --output_file.",
)
flags.DEFINE_string(
    "output_file",
    None,
    "Where the input rows and their predictions go (.csv, .tsv, .jsonl, .parquet).",
)
flags.DEFINE_multi_string("question", [], "Question answering: a question (repeatable).")
flags.DEFINE_multi_string("context", [], "Question answering: its context (one per question).")


def as_text(data: bytes) -> str:
    """Bytes from the command line, a file or stdin as text: bytes that are not UTF-8 become
    U+FFFD, as tfds' reviews do, rather than lone surrogates the tokenizer cannot encode."""
    return data.decode("utf-8", errors="replace")


def read_inputs(argv) -> list[str]:
    # Python hands undecodable argv bytes over as surrogate escapes; os.fsencode recovers them.
    texts = [as_text(os.fsencode(a)) for a in argv[1:]]
    if FLAGS.file:
        with open(FLAGS.file, "rb") as f:
            texts += as_text(f.read()).splitlines()
    if not texts and not FLAGS.question and not sys.stdin.isatty():
        texts = as_text(sys.stdin.buffer.read()).splitlines()
    return texts


def main(argv):
    if bool(FLAGS.input_file) != bool(FLAGS.output_file):
        raise app.UsageError("--input_file and --output_file go together")
    inputs = [] if FLAGS.input_file else read_inputs(argv)
    if not inputs and not FLAGS.question and not FLAGS.input_file:
        raise app.UsageError("give inputs as arguments, with --file, or on standard input")
    config = None
    if FLAGS.task and not FLAGS.workdir:
        config = evaluate.base_config.get_config()
        config.task = FLAGS.task
    config, tokenizer, model, params, _ = evaluate.load_trained(
        FLAGS.workdir, FLAGS.checkpoint, hf_dir=FLAGS.hf_dir, config=config
    )
    if FLAGS.input_file:
        out = prediction.predict_file(
            config, tokenizer, model, params, FLAGS.input_file, FLAGS.output_file
        )
        print(f"wrote the predictions to {out}")
        return
    task = tasks.make(config, tokenizer)
    for line in task.prediction_lines(model, params, inputs, FLAGS.question, FLAGS.context):
        print(line)


if __name__ == "__main__":
    cli.run(main)
