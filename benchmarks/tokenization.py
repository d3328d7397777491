"""Tokenization speed on IMDB's training reviews: what building the token cache costs.

  python benchmarks/tokenization.py --archive=../shared/data/aclImdb_v1.tar.gz

Reads the 22,500 training reviews (tfds' train split less the 10% held out, as the main job
does), then tokenizes them with `jaxformer.data.token_cache.tokenize` (the `tokenizers` batch
encoder over chunks of --chunk_size texts, spreading each chunk over its threads, then
truncation and the template) with all-MiniLM-L6-v2's tokenizer at --max_length, --reps times,
and with the batch encoder on one thread (RAYON_NUM_THREADS=1 in a child process) for the
ratio. Prints examples/s of each and the machine's CPU.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("archive", None, "aclImdb_v1.tar.gz (default: $JAXFORMER_IMDB_ARCHIVE).")
flags.DEFINE_integer("max_length", 256, "Tokenizer max length.")
flags.DEFINE_string("truncation", "head_tail", "head or head_tail.")
flags.DEFINE_integer("chunk_size", 1000, "Texts per batch-encoder call.")
flags.DEFINE_integer("reps", 3, "Timed runs; the best is reported.")
flags.DEFINE_bool("one_thread", False, "Internal: this process is the one-thread run.")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def examples_per_s(texts) -> float:
    from harness import minilm_folder

    from jaxformer.data import token_cache
    from jaxformer.hf.tokenizer_files import load_tokenizer

    tok = load_tokenizer(minilm_folder(), FLAGS.max_length, FLAGS.truncation)
    best = 0.0
    for _ in range(FLAGS.reps):
        start = time.perf_counter()
        token_cache.tokenize(texts, [0] * len(texts), tok, FLAGS.chunk_size)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def main(argv):
    del argv
    from jaxformer.data import imdb

    with tempfile.TemporaryDirectory() as tmp:
        builder = imdb.imdb_builder(os.path.join(tmp, "tfds"), FLAGS.archive)
        texts, _ = imdb.load_texts(builder, ("train",))["train"]
    if FLAGS.one_thread:
        print(examples_per_s(texts))
        return
    threaded = examples_per_s(texts)
    args = [sys.executable, __file__, "--one_thread", *sys.argv[1:]]
    out = subprocess.run(
        args, env={**os.environ, "RAYON_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    single = float(out.stdout.strip().splitlines()[-1])
    print(f"{len(texts)} IMDB training reviews, max_length {FLAGS.max_length}, {cpu_name()}")
    print(f"  batch encoder, all threads: {threaded:,.0f} examples/s")
    print(f"  batch encoder, one thread:  {single:,.0f} examples/s ({threaded / single:.2f}x)")


if __name__ == "__main__":
    app.run(main)
