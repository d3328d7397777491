"""Extractive question answering on a CPU: all-MiniLM-L6-v2 on SQuAD-format files, windows of
256 tokens, a size that trains on a 2-core CPU.

Run:   python train.py --config configs/squad_cpu.py --workdir runs/squad_cpu \
           --config.data.train_file=train-v1.1.json --config.data.validation_file=dev-v1.1.json
       python eval.py --workdir runs/squad_cpu --split validation
"""

from configs import squad


def get_config():
    c = squad.get_config()
    c.model.checkpoint = "sentence-transformers/all-MiniLM-L6-v2"
    c.data.max_length = 256
    c.data.buckets = (128, 192, 256)
    c.qa.doc_stride = 64
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_fraction = 0.1
    c.batch_size = 16
    c.eval_batch_size = 32
    c.num_epochs = 1.0
    c.eval_every = 1000
    c.checkpoint_every = 1000
    return c
