"""Masked-LM further pre-training of all-MiniLM-L6-v2 on IMDB's training reviews (Sun et al.
2019's within-task pre-training), to fine-tune the classifier from afterwards.

Run:   python train.py --config configs/imdb_mlm.py --workdir runs/mlm
       python train.py --config configs/imdb_minilm.py --workdir runs/minilm_from_mlm \
           --config.model.checkpoint=runs/mlm/hf_export
The checkpoint has no masked-LM head: it starts fresh, its decoder tied to the word embeddings
(logged). 15% of the tokens are chosen (80% [MASK], 10% random, 10% kept); validation reports
the perplexity of the chosen tokens; the best checkpoint (lowest perplexity) is exported as a
BertForMaskedLM folder. The measured comparison with fine-tuning directly is in README.md.
"""

from configs import imdb_minilm


def get_config():
    c = imdb_minilm.get_config()
    c.task = "masked_lm"
    c.label_names = None
    c.data.max_length = 128
    c.data.truncation = "head"
    c.data.buckets = (64, 128)
    c.data.validation_limit = 500
    c.optimizer.learning_rate = 5e-5
    c.batch_size = 32
    c.eval_batch_size = 32
    c.eval_every = 100
    c.checkpoint_every = 100
    return c
