"""Fine-tune bert-base-uncased on your own labelled texts (or text pairs), for a GPU.

Run:   python train.py --config configs/text_classification_gpu.py --workdir runs/glue \
           --config.data.train_file=train.csv --config.data.validation_file=dev.csv \
           --config.data.text_pair_column=sentence2 --config.data.text_column=sentence1
       (--config.model.checkpoint=/path/to/bert-base-uncased for a local folder)

The recipe of BERT's GLUE fine-tuning (Devlin et al. 2019): max length 128, batch 32,
learning rate 2e-5, 3 epochs, bfloat16 compute. configs/text_classification.py says how the
files, columns and problem types are given.
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = "bert-base-uncased"
    c.model.overrides.dtype = "bfloat16"
    c.data.max_length = 128
    c.data.truncation = "head"
    c.data.buckets = (64, 128)
    c.optimizer.learning_rate = 2e-5
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 3.0
    c.eval_every = 1000
    c.checkpoint_every = 1000
    return c
