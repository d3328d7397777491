"""Which library runs XLA:CPU's matrix multiplies, chosen per compiled program.

XLA:CPU (jax 0.10) hands float32 GEMMs to YNNPACK by default. The same jaxlib also carries
oneDNN, Intel's library (the kernels under PyTorch's CPU matmuls), behind experimental compiler
options. It makes most of the encoder's CPU training and inference steps faster:
docs/benchmarks.md has the same-run speedups and the command that measures them.

The oneDNN fusion pass is experimental, though: when a fusion's oneDNN graph splits into more than
one partition, the process aborts at the program's first run ("partition compile failed"), with
no Python exception to catch. Seen for an elementwise op on a matmul *input*, two matmuls in one
fusion, and an epilogue operand computed inside the fusion (the backward pass of a division after
a matmul; kernels/scan.py avoids it). So `jit(fn, matmul="onednn")` compiles with oneDNN, reads the
optimized HLO, and keeps that executable only when every oneDNN fusion is one matmul of
parameters followed by a chain of binary elementwise post-ops; otherwise it recompiles with XLA's
defaults (logged once per program and shape). oneDNN executables are not written to jax's
persistent compilation cache (XLA cannot serialize them).
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

log = logging.getLogger("jaxformer")
MATMUL_LIBRARIES = ("xla", "onednn")  # "xla": XLA's own choice (YNNPACK on x86 CPUs)
ONEDNN_OPTIONS = {
    "xla_cpu_use_onednn": True,
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    "xla_cpu_experimental_ynn_fusion_type": "",  # otherwise YNNPACK claims the dots first
}
# Values that may feed a oneDNN matmul or its epilogue without a partition of their own.
_LEAVES = ("parameter", "constant", "bitcast", "broadcast")
# Epilogue ops seen to run as oneDNN post-ops; a fusion with any other op is not trusted.
_POST_OPS = ("add", "subtract", "multiply", "divide", "maximum", "minimum")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"(?:^|\s)([a-z][\w\-]*)\(([^)]*)\)?")  # after the (maybe tuple) shape


class Instruction(NamedTuple):
    name: str
    opcode: str
    operands: list[str]  # instruction names
    text: str  # everything after "name = "


def parse_hlo(hlo: str) -> dict[str, list[Instruction]]:
    """Computation name -> its instructions, from HLO text (`compiled.as_text()`)."""
    out, current = {}, None
    for line in hlo.splitlines():
        if header := _HEADER.match(line):
            current = out.setdefault(header.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None and (m := _INSTRUCTION.match(line)):
            op = _OPCODE.search(m.group(2))
            operands = re.findall(r"%([\w.\-]+)", op.group(2)) if op else []
            current.append(Instruction(m.group(1), op.group(1) if op else "", operands, m.group(2)))
    return out


def onednn_fusions(hlo: str) -> dict[str, list[Instruction]]:
    """The fused computations that compiled HLO text runs through oneDNN."""
    called = re.findall(r"kind=kCustom, calls=%([\w.\-]+).*\"kind\":\"__onednn_fusion\"", hlo)
    computations = parse_hlo(hlo)
    return {name: computations[name] for name in called if name in computations}


def _fusion_problems(fusion: str, instructions: list[Instruction]) -> list[str]:
    kind = {i.name: i.opcode for i in instructions}
    operands = {i.name: i.operands for i in instructions}

    def is_leaf(name: str) -> bool:
        return kind.get(name) in _LEAVES and all(map(is_leaf, operands.get(name, [])))

    dots = [i.name for i in instructions if i.opcode == "dot"]
    if len(dots) != 1:
        return [f"{fusion}: {len(dots)} dots in one fusion"]
    problems, chain = [], {dots[0]}
    for name, opcode, ops, _ in instructions:
        if opcode == "dot":
            problems += [f"{fusion}: dot input {o} is computed" for o in ops if not is_leaf(o)]
        elif opcode not in _LEAVES:
            if opcode not in _POST_OPS:
                problems.append(f"{fusion}: {opcode} {name} is not a known oneDNN post-op")
            on_chain = [o for o in ops if o in chain]
            rest = [o for o in ops if o not in chain and not is_leaf(o)]
            if len(on_chain) != 1 or rest:
                problems.append(f"{fusion}: {opcode} {name} is not a matmul post-op")
            chain.add(name)
    return problems


def onednn_fusion_problems(hlo: str) -> list[str]:
    """Why each oneDNN fusion of compiled HLO text would abort at run time; [] when none would.

    A safe fusion is one dot whose operands are parameters (through bitcasts), then binary
    elementwise ops (add, multiply, ...) that each take the running value and otherwise only
    parameters, constants, or their bitcasts and broadcasts: what oneDNN compiles as one matmul
    with post-ops. Anything else is reported, so the caller falls back to XLA's default."""
    return [p for name, body in onednn_fusions(hlo).items() for p in _fusion_problems(name, body)]


class jit:  # lower-case: used like jax.jit
    """`jax.jit(fn, **jit_kwargs)` with XLA:CPU's GEMMs from `matmul` ("xla" or "onednn").

    Compiles once per argument structure, shapes, dtypes and shardings, like jax.jit. With
    "onednn" on a non-CPU backend, or when the program has a fusion oneDNN cannot run (see the
    module docstring), it uses XLA's defaults. Positional arguments only."""

    def __init__(self, fn: Callable, matmul: str = "xla", **jit_kwargs: Any):
        if matmul not in MATMUL_LIBRARIES:
            raise ValueError(
                f"matmul={matmul!r} is not supported; choose one of {MATMUL_LIBRARIES}"
            )
        self.jitted = jax.jit(fn, **jit_kwargs)
        self.matmul = matmul
        self.compiled: dict[Any, Any] = {}
        self.uses_onednn: dict[Any, bool] = {}  # per compiled signature

    @functools.cached_property
    def _onednn(self) -> bool:  # decided at the first call, when the backend is up
        return self.matmul == "onednn" and jax.default_backend() == "cpu"

    def __call__(self, *args):
        return self.compile(*args)(*args) if self._onednn else self.jitted(*args)

    def compile(self, *args):
        """The executable that runs these arguments (compiled on first use)."""
        if not self._onednn:
            return self.jitted.lower(*args).compile()
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, *((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves))
        if key not in self.compiled:
            self.compiled[key] = self._compile(key, args)
        return self.compiled[key]

    def _compile(self, key, args):
        lowered = self.jitted.lower(*args)
        with warnings.catch_warnings():  # it just stays out of jax's persistent cache
            warnings.filterwarnings("ignore", "Error writing persistent compilation cache")
            compiled = lowered.compile(compiler_options=ONEDNN_OPTIONS)
        problems = onednn_fusion_problems(compiled.as_text())
        self.uses_onednn[key] = not problems
        if not problems:
            return compiled
        log.warning(
            "oneDNN cannot run %d fusion(s) of this program (first: %s); using XLA's default "
            "matmuls for it",
            len(problems),
            problems[0],
        )
        return lowered.compile()
