"""Fine-tuning a BERT classifier on IMDB, laid out as the Flax examples' train.py split by job.

optim        AdamW, its weight-decay mask and the warmup-then-decay learning-rate schedule
steps        TrainState, the cross-entropy, `train_step` and `eval_step` (pure functions)
parallel     where the state lives and how the steps compile: jit over a Mesh, pmap, one device
checkpoints  Orbax managers for the latest and the best checkpoint of a workdir
metrics      classification metrics, host-side step metrics, metrics.jsonl/TensorBoard, the plot
squad_eval   SQuAD exact match and F1, as the official v1.1 and v2.0 evaluation scripts
loop         building the model and data, `train_and_evaluate(config, workdir)`
evaluate     a trained workdir (or exported folder) on a split, and predictions for raw texts
config       every experiment field with its default (configs/*.py start from it)
"""
