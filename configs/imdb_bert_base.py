"""bert-base-uncased on IMDB, for machines with a GPU.

Run:   python train.py --config configs/imdb_bert_base.py --workdir runs/bert_base
       (--config.model.checkpoint=/path/to/bert-base-uncased for a local folder)
Max length 512 with head+tail truncation, bfloat16 compute, 2 epochs, batch 32, lr 2e-5.
Sun et al. (2019) report 94.6% test accuracy for this recipe. No jaxformer run of it is recorded:
it wants a GPU (on a 2-core Intel Xeon (Sapphire Rapids) CPU it would take about a day).
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = "bert-base-uncased"
    c.model.overrides.dtype = "bfloat16"
    c.data.max_length = 512
    c.data.truncation = "head_tail"
    c.optimizer.learning_rate = 2e-5
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 2.0
    c.eval_every = 1000
    c.checkpoint_every = 1000
    return c
