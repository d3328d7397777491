"""Named-entity recognition on a CPU: all-MiniLM-L6-v2 (6 layers, hidden 384, uncased) on
CoNLL-format files, a size that trains in minutes on a 2-core CPU.

Run:   python train.py --config configs/conll_ner_cpu.py --workdir runs/ner_cpu \
           --config.data.train_file=eng.train --config.data.validation_file=eng.testa \
           --config.data.test_file=eng.testb
       python eval.py --workdir runs/ner_cpu --split test
Lower-casing costs an uncased model some entity F1 against a cased one (configs/conll_ner.py).
"""

from configs import conll_ner


def get_config():
    c = conll_ner.get_config()
    c.model.checkpoint = "sentence-transformers/all-MiniLM-L6-v2"
    c.data.max_length = 128
    c.optimizer.learning_rate = 1e-4
    c.optimizer.warmup_fraction = 0.1
    c.batch_size = 16
    c.num_epochs = 1.0
    c.eval_every = 400
    c.checkpoint_every = 400
    return c
