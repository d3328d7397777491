"""A tiny model from scratch for tests and smoke runs (seconds on a CPU).

Run:   python train.py --config configs/tiny.py --workdir /tmp/tiny \
           --config.data.archive=/path/to/small/aclImdb_v1.tar.gz
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = None
    c.tokenizer = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.arch = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    c.data.max_length = 64
    c.data.truncation = "head"
    c.data.buckets = (16, 32, 64)
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_fraction = 0.0
    c.batch_size = 8
    c.eval_batch_size = 8
    c.num_epochs = 1.0
    c.log_every = 2
    c.eval_every = 4
    c.checkpoint_every = 4
    c.export_dir = None
    return c
