"""The textbook Transformer encoder trained from scratch on IMDB: token embeddings scaled by
sqrt(d_model) (Vaswani et al. 2017, 3.4), fixed sinusoidal positions, post-LN self-attention and
feed-forward layers; 2 layers, hidden 128, 4 heads, feed-forward 512, the MiniLM WordPiece
vocabulary (about 4.4M parameters, 3.9M of them the token table), classified from [CLS] through
BERT's tanh pooler. Transformers has no such model, so nothing is exported.

Run (2-core AMD EPYC, shared with other jobs, under nice):
    python train.py --config configs/imdb_scratch.py --workdir runs/scratch \
        --config.data.archive=../shared/data/aclImdb_v1.tar.gz
    python eval.py --workdir runs/scratch --split test
Measured: best validation accuracy 0.894 (step 1400 of 1408, 2,500 reviews carved from train),
test accuracy 0.8823 on all 25,000 test reviews (F1 0.883). Training took 20 minutes (2 epochs
of 22,500 reviews, 5 validation passes), with the test suite running beside it for part of it.

Recipe notes (validation accuracy; the quick probes: 5,000 reviews, 128 tokens, 300 steps at
2e-3, `--config.data.train_limit=5000 --config.data.validation_limit=1000
--config.data.max_length=128 --config.data.truncation=head --config.data.buckets='(128,)'
--config.num_train_steps=300 --config.optimizer.learning_rate=2e-3`):
- scale_embedding is what lets the sinusoidal model train. The fixed table has unit amplitude;
  BERT's N(0, 0.02) token table beside it is swamped before the embedding LayerNorm, and Adam's
  steps (about the learning rate per entry) change it 35x more slowly, relative to its size, than
  a table stored at N(0, 1/d) and multiplied by sqrt(d). Probes: scaled 0.786; with
  `--config.model.arch.scale_embedding=False` 0.506 (chance; also when that table starts at the
  sinusoids' scale, standard deviation 0.7, unscaled); learned positions
  (`--config.model.arch.position_embedding_type=absolute`, unscaled) 0.777.
- 512 tokens, head_tail truncation (the first 128 and last 382 tokens), buckets 128 to 512.
- AdamW at 1e-3 peak, 10% warmup, linear decay, weight decay 0.05, batch 32, hidden dropout 0.1,
  2 epochs: validation 0.846, 0.883, 0.891, 0.894 at steps 350-1400. At 2e-3 the loss went NaN
  at step 469 (validation 0.665 at step 350). At 256 tokens (buckets 128 and 256), 1e-3, 3
  epochs: validation 0.887, test 0.8624. Learned positions, unscaled, at 2e-3, 256 tokens, 3
  epochs: validation 0.878, test 0.858.
"""

from jaxformer.training import config as base


def get_config():
    c = base.get_config()
    c.model.checkpoint = None
    c.tokenizer = "sentence-transformers/all-MiniLM-L6-v2"
    c.model.arch.hidden_size = 128
    c.model.arch.num_hidden_layers = 2
    c.model.arch.num_attention_heads = 4
    c.model.arch.intermediate_size = 512
    c.model.arch.position_embedding_type = "sinusoidal"
    c.model.arch.scale_embedding = True
    c.model.arch.hidden_dropout_prob = 0.1
    c.data.max_length = 512
    c.data.truncation = "head_tail"
    c.data.buckets = (128, 256, 384, 512)
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.05
    c.batch_size = 32
    c.num_epochs = 2.0
    c.eval_every = 350
    c.checkpoint_every = 350
    c.export_dir = None  # sinusoidal positions and scaled embeddings: no transformers model
    return c
