"""Data for fine-tuning: the user's own files and tables, IMDB reviews, CoNLL named entities,
SQuAD questions, masked-LM masks.

- `sources`: rows of named columns from CSV, TSV, JSON Lines, Parquet and text files, a pandas
  DataFrame, a Hugging Face `datasets.Dataset` or a tfds dataset.
- `token_cache`: tokenization, and token ids cached per tokenizer, split and source content.
- `batching`: length-bucketed training batches, eval batches, each process's slice of a global
  batch.
- `imdb`: the tfds `imdb_reviews` reviews, downloaded or built from a local aclImdb archive, and
  the validation split carved from train.
- `conll`: CoNLL-2003 sentences from local files or tfds, their tags aligned to sub-tokens, token
  predictions back to words.
- `ner_words`: sentences of pre-split words encoded word by word, with each token's word.
- `squad`: SQuAD v1.1 / v2.0 files or tfds' squad, question-and-context windows with answer
  labels, and span logits decoded to answer text.
- `qa_windows`: question-and-context pairs cut into overlapping windows with character offsets.
"""

from jaxformer.data.batching import EvalBatches, TokenizedSplit, TrainBatches, pad_ids
from jaxformer.data.imdb import load_imdb
from jaxformer.data.token_cache import TextEncoder

__all__ = ["load_imdb", "TokenizedSplit", "TrainBatches", "EvalBatches", "TextEncoder", "pad_ids"]
