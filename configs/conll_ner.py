"""Named-entity recognition: fine-tune bert-base-cased on CoNLL-2003 (English), sized for one GPU.

Run:   python train.py --config configs/conll_ner.py --workdir runs/ner
       python eval.py --workdir runs/ner --split test
       python -m jaxformer.predict --workdir runs/ner "George Washington went to Washington."
The data comes from tfds' conll2003 (downloaded); offline, give CoNLL-format files:
       --config.data.train_file=eng.train --config.data.validation_file=eng.testa \
       --config.data.test_file=eng.testb
Recipe (transformers' run_ner.py defaults for bert-base-cased): 3 epochs, batch 32, AdamW at
5e-5 with linear decay, max length 128, the label on each word's first sub-token, model
selection on entity F1 of the validation split. Published figures for this recipe are about
91-92 entity F1 on the test split; jaxformer's has not been measured (no GPU and no CoNLL-2003
copy on the machines it was developed on).
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.task = "token_classification"
    c.model.checkpoint = "bert-base-cased"
    c.label_names = None  # the training split's tags (jaxformer.data.conll.label_names)
    c.data.max_length = 128
    c.data.truncation = "head"
    c.data.buckets = (32, 64, 128)
    c.data.validation_fraction = 0.0
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_fraction = 0.0
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_epochs = 3.0
    c.eval_every = 500
    c.checkpoint_every = 500
    return c
