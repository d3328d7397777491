"""IMDB's reviews written out as CSV files, to fine-tune through the generic file route and
compare it with IMDB's own route (same seed: the same batches, the same metrics).

  python benchmarks/imdb_csv.py --archive=../shared/data/aclImdb_v1.tar.gz --out=runs/imdb_csv

writes OUT/train.csv and OUT/test.csv (columns text, label = neg / pos) in tfds' stored order,
which the file route carves validation from as IMDB's route does. The commands that compare the
two routes are in docs/data.md.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from absl import app, flags

from jaxformer.data import imdb

FLAGS = flags.FLAGS
flags.DEFINE_string("archive", None, "aclImdb_v1.tar.gz (default: $JAXFORMER_IMDB_ARCHIVE).")
flags.DEFINE_string("out", "runs/imdb_csv", "Folder for train.csv and test.csv.")


def main(argv):
    del argv
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        builder = imdb.imdb_builder(os.path.join(tmp, "tfds"), FLAGS.archive)
        for split in ("train", "test"):
            texts, labels = imdb.read_split(builder, split)
            names = np.asarray(["neg", "pos"])[labels].tolist()
            pa_csv.write_csv(pa.table({"text": texts, "label": names}), out / f"{split}.csv")
            print(f"{out / f'{split}.csv'}: {len(texts)} reviews")


if __name__ == "__main__":
    app.run(main)
