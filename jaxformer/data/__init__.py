"""Data for fine-tuning: IMDB reviews, CoNLL named entities, SQuAD questions, masked-LM masks.

- `imdb`: the tfds `imdb_reviews` reviews, downloaded or built from a local aclImdb archive, and
  the validation split carved from train.
- `pipeline`: token ids cached per tokenizer and split, length-bucketed training batches, eval
  batches, each process's slice of a global batch.
- `conll`: CoNLL-2003 sentences from local files or tfds, their tags aligned to sub-tokens, token
  predictions back to words.
- `squad`: SQuAD v1.1 / v2.0 files or tfds' squad, question-and-context windows with answer
  labels, and span logits decoded to answer text.
"""

from jaxformer.data.pipeline import (
    EvalBatches,
    TextEncoder,
    TokenizedSplit,
    TrainBatches,
    load_imdb,
    pad_ids,
)

__all__ = ["load_imdb", "TokenizedSplit", "TrainBatches", "EvalBatches", "TextEncoder", "pad_ids"]
