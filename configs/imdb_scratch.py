"""A small Transformer trained from scratch on IMDB: 4 layers, hidden 256, 4 heads, sinusoidal
positions (Vaswani et al. 2017), the MiniLM WordPiece vocabulary.

Run:   python train.py --config configs/imdb_scratch.py --workdir runs/scratch
Without pretraining, expect clearly lower accuracy than fine-tuning (about the 80s, percent);
see README.md for a measured figure if one is given.
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = None
    c.tokenizer = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.arch.position_embedding_type = "sinusoidal"
    c.model.arch.hidden_dropout_prob = 0.1
    c.data.max_length = 256
    c.data.truncation = "head_tail"
    c.optimizer.learning_rate = 3e-4
    c.optimizer.weight_decay = 0.05
    c.batch_size = 32
    c.num_epochs = 3.0
    return c
