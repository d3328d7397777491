"""Embed every line of a text file with a sentence-embedding model; write an (n, m) .npy.

python embed.py --input=lines.txt --output=embeddings.npy       # all-MiniLM-L6-v2
python embed.py --model=runs/embedder --input=lines.txt --output=e.npy --batch_size=64

Line i of the input (split at "\\n"; bytes that are not UTF-8 become U+FFFD) gives row i, an
empty line too. The file is written whole or not at all (a temporary file, then a rename); bad
input ends in one `error:` line.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from absl import app, flags, logging
from tqdm.auto import tqdm

from jaxformer.embedding import embed
from jaxformer.hf.hub import MINILM_HUB_ID
from jaxformer.training import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", MINILM_HUB_ID, "Checkpoint folder or Hugging Face Hub id.")
flags.DEFINE_string("input", None, "Text file, one text per line.")
flags.DEFINE_string("output", None, "Where to write the embeddings (.npy, float32).")
flags.DEFINE_integer("batch_size", 32, "Texts per batch.", lower_bound=1)
flags.DEFINE_integer("max_length", None, "Tokens kept per text (default: the model's).")
flags.mark_flags_as_required(["input", "output"])


def read_lines(path: str) -> list[str]:
    """The file's lines, split at "\\n" (a trailing "\\r" dropped), decoded as UTF-8 with
    replacement, as predict.py reads reviews: the tokenizer cannot encode lone surrogates."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"--input={path} does not exist")
    if not file.is_file():
        raise ValueError(f"--input={path} is not a file; give a text file, one text per line")
    text = file.read_bytes().decode("utf-8", errors="replace")
    if not text:
        raise ValueError(f"--input={path} is empty; give a text file, one text per line")
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def check_output(path: str) -> Path:
    """Refuses an output that cannot be written, before the embedding starts."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--output={path} is a folder; give a file name, e.g. embeddings.npy")
    folder = out.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"--output={path}: folder {folder} does not exist; create it")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--output={path}: folder {folder} is not writable")
    return out


def save_atomically(out: Path, array: np.ndarray) -> None:
    """np.save to a temporary file beside `out`, then os.replace: never a half-written file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        raise ValueError(f"could not write --output={out} ({e.strerror or e})") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # the vectors are the output: warnings only
        logging.set_verbosity(logging.WARNING)
    lines = read_lines(FLAGS.input)
    out = check_output(FLAGS.output)
    with tqdm(total=len(lines), desc="embed", unit="line", disable=None) as bar:
        vectors = embed(lines, FLAGS.model, FLAGS.batch_size, FLAGS.max_length, progress=bar.update)
    save_atomically(out, vectors)
    print(f"wrote {out}: {vectors.shape[0]} x {vectors.shape[1]} float32")


if __name__ == "__main__":
    cli.run(main)
