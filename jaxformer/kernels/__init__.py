"""Fast paths for the equations of `jaxformer.layers`, each tested against the function it
replaces and chosen by `jaxformer.dispatch`:

  scan.py          attention one head at a time (XLA:CPU's fastest pure-JAX program)
  fused.py         attention through jax.nn.dot_product_attention (XLA's implementation)
  cudnn.py         attention in cuDNN's flash attention (GPU, bf16/fp16)
  splash.py        attention in Pallas's splash attention (TPU; imported there only)
  cpu.py, csrc/    compiled CPU kernels through XLA's FFI: attention, MKL GEMMs
  feed_forward.py  the feed-forward block with a hand-written gradient (XLA or MKL GEMMs)
  dropout.py       dropout with 16 random bits per element from an unrolled Threefry
  barrier.py       the identity, its gradient written out (XLA:CPU, pre-LN residual streams)
  relative.py      DeBERTa's relative-position scores by a relative shift, not a gather
  autotune.py      the "auto" choices measured once per machine (MKL or XLA GEMMs)

docs/design.md says why each exists, what it buys and how to turn it off.
"""
