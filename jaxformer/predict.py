"""Label reviews with a trained classifier: one line of output per input text.

python -m jaxformer.predict --workdir runs/minilm "A wonderful, moving film."
python -m jaxformer.predict --workdir runs/minilm --file reviews.txt   # one review a line
cat reviews.txt | python -m jaxformer.predict --hf_dir runs/minilm/hf_export
"""

import sys

from absl import app, flags

from jaxformer.training import evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("hf_dir", None, "Hugging Face folder instead of a workdir.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the workdir.")
flags.DEFINE_string("file", None, "Read reviews from this file, one per line.")
LABELS = ("negative", "positive")


def main(argv):
    texts = argv[1:]
    if FLAGS.file:
        with open(FLAGS.file, encoding="utf-8", errors="replace") as f:
            texts += [line.rstrip("\n") for line in f]
    if not texts and not sys.stdin.isatty():
        texts = [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        raise app.UsageError("give reviews as arguments, with --file, or on standard input")
    try:
        config, tokenizer, model, params, _ = evaluate.load_classifier(
            FLAGS.workdir, FLAGS.checkpoint, hf_dir=FLAGS.hf_dir
        )
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    probs = evaluate.predict(texts, tokenizer, model, params, xla_cpu_dots=config.xla_cpu_dots)
    for text, p in zip(texts, probs, strict=True):
        label = int(p.argmax())
        name = LABELS[label] if len(p) == 2 else str(label)
        print(f"{name}\t{p[label]:.3f}\t{text[:80]}")


if __name__ == "__main__":
    app.run(main)
