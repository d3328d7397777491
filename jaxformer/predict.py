"""Label reviews with a trained classifier: one line of output per input text.

python -m jaxformer.predict --workdir runs/minilm "A wonderful, moving film."
python -m jaxformer.predict --workdir runs/minilm --file reviews.txt   # one review a line
cat reviews.txt | python -m jaxformer.predict --hf_dir runs/minilm/hf_export
"""

import os
import sys

from absl import app, flags

from jaxformer.training import cli, evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("hf_dir", None, "Hugging Face folder instead of a workdir.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the workdir.")
flags.DEFINE_string("file", None, "Read reviews from this file, one per line.")
LABELS = ("negative", "positive")


def as_text(data: bytes) -> str:
    """Bytes from the command line, a file or stdin as text: bytes that are not UTF-8 become
    U+FFFD, as tfds' reviews do, rather than lone surrogates the tokenizer cannot encode."""
    return data.decode("utf-8", errors="replace")


def main(argv):
    # Python hands undecodable argv bytes over as surrogate escapes; os.fsencode recovers them.
    texts = [as_text(os.fsencode(a)) for a in argv[1:]]
    if FLAGS.file:
        with open(FLAGS.file, "rb") as f:
            texts += as_text(f.read()).splitlines()
    if not texts and not sys.stdin.isatty():
        texts = as_text(sys.stdin.buffer.read()).splitlines()
    if not texts:
        raise app.UsageError("give reviews as arguments, with --file, or on standard input")
    config, tokenizer, model, params, _ = evaluate.load_trained(
        FLAGS.workdir, FLAGS.checkpoint, hf_dir=FLAGS.hf_dir
    )
    probs = evaluate.predict(texts, tokenizer, model, params, xla_cpu_dots=config.xla_cpu_dots)
    for text, p in zip(texts, probs, strict=True):
        label = int(p.argmax())
        name = LABELS[label] if len(p) == 2 else str(label)
        print(f"{name}\t{p[label]:.3f}\t{text[:80]}")


if __name__ == "__main__":
    cli.run(main)
