"""Fine-tuning on the tasks of jaxformer.tasks (classification, NER, QA, masked-LM),
laid out as the Flax examples' train.py split by job: one loop for every task.

optim        AdamW, its weight-decay mask and the warmup-then-decay learning-rate schedule
steps        TrainState, `train_step` and `eval_step` (pure functions of a task's loss and outputs)
parallel     where the state lives and how the steps compile: jit over a Mesh, pmap, one device
checkpoints  Orbax managers for the latest and the best checkpoint of a workdir
metrics      a split's evaluation, step metrics, metrics.jsonl, the plot
seqeval      entity-level precision, recall and F1 of tag sequences (NER)
squad_eval   the official SQuAD exact match and F1
loop         building the model and data, `train_and_evaluate(config, workdir, data=None)`
processes    several processes of one run: process 0's work, agreed stops, console filters
scores       classification (single, multi-label) and regression metrics of a split
prediction   predictions for a file of rows, written beside them
evaluate     a trained workdir (or exported folder) on a split, and predictions for raw texts
config       every experiment field with its default (configs/*.py start from it)
"""
