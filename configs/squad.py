"""Extractive question answering: fine-tune bert-base-uncased on SQuAD v1.1, sized for one GPU.

Run:   python train.py --config configs/squad.py --workdir runs/squad
       python eval.py --workdir runs/squad --split validation
       python -m jaxformer.predict --workdir runs/squad --question "Who wrote it?" \
           --context "The book was written by Jane Austen in 1813."
The data comes from tfds' squad (downloaded); offline, give SQuAD-format JSON files:
       --config.data.train_file=train-v1.1.json --config.data.validation_file=dev-v1.1.json
SQuAD v2.0: --config.qa.version_2=True (unanswerable questions; the null-score threshold
is --config.qa.null_threshold).
Recipe (transformers' run_qa.py for bert-base-uncased): 2 epochs, batch 12, AdamW at 3e-5,
windows of 384 tokens with a stride of 128, answers of at most 30 tokens from the 20 best starts
and ends. Published figures for this recipe are about 81 exact match / 88.5 F1 on the dev set;
jaxformer's has not been measured (no GPU and no SQuAD copy on the machines it was developed on).
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.task = "question_answering"
    c.model.checkpoint = "bert-base-uncased"
    c.label_names = None
    c.data.max_length = 384
    c.data.truncation = "head"
    c.data.buckets = (128, 256, 384)
    c.qa.doc_stride = 128
    c.data.validation_fraction = 0.0
    c.optimizer.learning_rate = 3e-5
    c.optimizer.warmup_fraction = 0.0
    c.batch_size = 12
    c.eval_batch_size = 48
    c.num_epochs = 2.0
    c.eval_every = 2000
    c.checkpoint_every = 2000
    return c
