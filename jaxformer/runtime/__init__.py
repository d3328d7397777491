"""Process-wide tuning for CPU hosts, applied only by the command-line entry points (train.py,
eval.py, the benchmarks), each behind a documented flag; library functions never call it:

  malloc.py   glibc malloc that keeps freed memory (--malloc)
  onednn.py   XLA:CPU's oneDNN dots per compiled program, checked (--config.xla_cpu_dots)
"""
