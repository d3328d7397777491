"""Fine-tune all-MiniLM-L6-v2 on your own labelled texts (or text pairs), sized for a CPU.

Run:   python train.py --config configs/text_classification.py --workdir runs/tickets \
           --config.data.train_file=train.csv --config.data.text_column=text \
           --config.data.label_column=label
       python eval.py --workdir runs/tickets --split test --file=test.csv
       python -m jaxformer.predict --workdir runs/tickets --input_file=new.csv \
           --output_file=preds.csv

The files may be CSV, TSV, JSON Lines or Parquet, or a glob of shards; validation is 10% of
train unless --config.data.validation_file is given. The problem type is inferred from the
label column (strings or integers: single label; lists, or strings cut at
--config.data.label_separator: multi-label; other numbers: regression) or set with
--config.problem_type. Sentence pairs (MNLI, QQP, STS-B shapes) add
--config.data.text_pair_column=... . With few examples, raise --config.num_epochs.

MiniLM-L6 at 128 tokens trains at about 30 examples/s on a 2-core CPU (the IMDB main job's
step), so 10,000 examples take about 6 minutes an epoch. bert-base on a GPU:
configs/text_classification_gpu.py.
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = "sentence-transformers/all-MiniLM-L6-v2"
    c.data.max_length = 128
    c.data.truncation = "head"
    c.data.buckets = (32, 64, 128)
    c.optimizer.learning_rate = 5e-5
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_epochs = 3.0
    c.eval_every = 200
    c.checkpoint_every = 200
    return c
