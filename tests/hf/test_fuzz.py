"""Damaged checkpoints, many at once: a small random BERT classifier folder (transformers'
save_pretrained, and a pytorch_model.bin variant) with a trained WordPiece tokenizer, copied
over and over with one file truncated, one byte flipped or one file removed (fixed seed).

Every `jaxformer.from_pretrained` and `jaxformer.load_tokenizer` of a damaged copy must either
load what the undamaged folder holds, load what transformers loads from the same damaged folder
(a flipped byte in a float is a different model, not a broken one), or raise the loader's own
error: CheckpointError, or FileNotFoundError, naming the folder. Never another exception, a
crash, a hang, or more than 1 GiB of memory. Each case runs in a worker process under an alarm.
"""

import multiprocessing
import operator
import resource
import shutil
import signal
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

import jaxformer
from jaxformer.hf import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SEED, RANDOM_CASES, WORKERS = 0, 139, 2  # with one removal per file: 150 cases
CASE_SECONDS = 30  # a case taking longer counts as a hang
MEMORY_BOUND = 1 << 30  # growth of the worker's peak RSS in one case
SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=24,
    type_vocab_size=2,
    num_labels=3,
)
WORDS = "the a film movie plot acting was great slow thin wooden ending superb really worth it"
CORPUS = [
    " ".join(np.random.default_rng(i).choice(WORDS.split(), 8)) + f" scene {i}." for i in range(200)
]
TEXTS = ["The film was great!", "A slow, thin plot; wooden acting.", "ok", "Really worth it 42"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BATCH_IDS = np.random.default_rng(1).integers(1, 100, (3, 10))


def train_tokenizer() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS)
    )
    return tok


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"safetensors": folder, "bin": folder}: the same random model and tokenizer, as
    model.safetensors + tokenizer.json + vocab.txt, and as pytorch_model.bin + vocab.txt."""
    _quiet_transformers()
    root = tmp_path_factory.mktemp("fuzz")
    tok = jaxformer.Tokenizer(train_tokenizer(), max_length=24)
    torch.manual_seed(0)
    config = transformers.BertConfig(**SMALL, vocab_size=tok.vocab_size)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "safetensors")
    tok.save(root / "safetensors")
    model.config.save_pretrained(root / "bin")
    torch.save(model.state_dict(), root / "bin" / "pytorch_model.bin")
    tok.save(root / "bin")
    (root / "bin" / "tokenizer.json").unlink()  # the vocab.txt path
    return {name: root / name for name in ("safetensors", "bin")}


# --- What one case checks, in a worker process ---


class _Hang(BaseException):  # not caught by the `except Exception` of a case
    pass


def _on_alarm(signum, frame):
    raise _Hang


def _is_loader_error(e: Exception, folder: Path) -> bool:
    return isinstance(e, CheckpointError | FileNotFoundError) and str(folder) in str(e)


def _close(ours, theirs) -> bool:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return False
    finite = theirs[np.isfinite(theirs)]
    scale = max(1.0, float(np.abs(finite).max(initial=0.0)))
    return np.allclose(ours, theirs, rtol=1e-3, atol=1e-4 * scale, equal_nan=True)


def model_logits(folder):
    """Ours: the damaged folder's logits on BATCH_IDS (ids clipped to the vocabulary)."""
    model, params = jaxformer.from_pretrained(folder)
    ids = BATCH_IDS % model.config.vocab_size
    return np.asarray(model.apply({"params": params}, ids, np.ones_like(ids), np.zeros_like(ids)))


def transformers_logits(folder):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.tensor(BATCH_IDS % model.config.vocab_size)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=0 * ids)
    return out.logits.numpy()


def token_ids(folder):
    return [x.tolist() for x in jaxformer.load_tokenizer(folder, max_length=24).encode_ids(TEXTS)]


def transformers_token_ids(folder):
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return tok(TEXTS, truncation=True, max_length=24)["input_ids"]


def _equal(ours, reference) -> bool:
    if isinstance(reference, np.ndarray):
        return isinstance(ours, np.ndarray) and np.array_equal(ours, reference)
    return ours == reference


def check(load, reference, load_transformers, folder, close) -> str:
    """One loader on a damaged folder: 'same' (exactly the undamaged folder's outputs), 'as
    transformers' (what transformers loads from the damaged folder, to `close`), 'loader error',
    or a failure ('wrong: ...', 'other exception: ...')."""
    try:
        ours = load(folder)
    except Exception as e:
        if _is_loader_error(e, folder):
            return "loader error"
        return f"other exception: {type(e).__name__}: {e}"
    if _equal(ours, reference):
        return "same"
    try:
        theirs = load_transformers(folder)
    except Exception as e:
        return f"wrong: ours loads a changed folder that transformers refuses ({e})"
    return "as transformers" if close(ours, theirs) else "wrong: differs from transformers"


def damage(folder: Path, case: dict) -> None:
    path = folder / case["file"]
    if case["kind"] == "remove":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    pos = case["where"] % len(data)
    if case["kind"] == "truncate":
        del data[pos:]
    else:
        data[pos] ^= case["xor"]
    path.write_bytes(bytes(data))


def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def run_case(case: dict, source: str, references: dict) -> dict:
    _quiet_transformers()
    signal.signal(signal.SIGALRM, _on_alarm)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(source, Path(tmp) / "ckpt"))
        damage(folder, case)
        signal.alarm(CASE_SECONDS)
        try:
            result = {
                "model": check(
                    model_logits, references["logits"], transformers_logits, folder, _close
                ),
                "tokenizer": check(
                    token_ids, references["ids"], transformers_token_ids, folder, operator.eq
                ),
            }
        except _Hang:
            result = {"model": "hang", "tokenizer": "hang"}
        finally:
            signal.alarm(0)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    if growth > MEMORY_BOUND:
        result["memory"] = f"peak RSS grew {growth / 2**20:.0f} MiB"
    return result


# --- The cases ---


def make_cases(folders) -> list[dict]:
    """Each file removed once, then RANDOM_CASES truncations and byte flips, the positions
    drawn near the start (headers), near the end (zip directories) or anywhere."""
    rng = np.random.default_rng(SEED)
    files = {v: sorted(p.name for p in f.iterdir()) for v, f in folders.items()}
    cases = [dict(variant=v, file=f, kind="remove") for v in files for f in files[v]]
    for _ in range(RANDOM_CASES):
        variant = str(rng.choice(list(files)))
        weights = "model.safetensors" if variant == "safetensors" else "pytorch_model.bin"
        names = files[variant]
        p = np.array([4.0 if n == weights else 1.0 for n in names])
        name = str(rng.choice(names, p=p / p.sum()))
        size = (folders[variant] / name).stat().st_size
        region = rng.choice(["head", "tail", "anywhere"], p=[0.4, 0.2, 0.4])
        where = {
            "head": int(rng.integers(0, min(size, 1024))),
            "tail": int(size - 1 - rng.integers(0, min(size, 1024))),
            "anywhere": int(rng.integers(0, size)),
        }[str(region)]
        kind = str(rng.choice(["truncate", "flip"], p=[0.35, 0.65]))
        cases.append(
            dict(variant=variant, file=name, kind=kind, where=where, xor=int(rng.integers(1, 256)))
        )
    return cases


def test_damaged_checkpoints_load_right_or_fail_clearly(folders):
    references = {}
    for variant, folder in folders.items():
        logits, ids = model_logits(folder), token_ids(folder)
        assert _close(logits, transformers_logits(folder)), variant
        assert ids == transformers_token_ids(folder), variant
        references[variant] = {"logits": logits, "ids": ids}

    cases = make_cases(folders)
    context = multiprocessing.get_context("spawn")  # no fork of a process running JAX threads
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        futures = [
            pool.submit(run_case, c, str(folders[c["variant"]]), references[c["variant"]])
            for c in cases
        ]
        results = [f.result(timeout=CASE_SECONDS * len(cases)) for f in futures]

    counts = Counter()
    failures = []
    for case, result in zip(cases, results, strict=True):
        for loader in ("model", "tokenizer"):
            outcome = result[loader]
            counts[f"{loader}: {outcome.split(':')[0]}"] += 1
            if outcome not in ("same", "as transformers", "loader error"):
                failures.append((case, loader, outcome))
        if "memory" in result:
            failures.append((case, "memory", result["memory"]))
    summary = f"{len(cases)} damaged folders: " + ", ".join(
        f"{k} {n}" for k, n in sorted(counts.items())
    )
    print("\n" + summary)
    assert not failures, summary + "\n" + "\n".join(map(str, failures[:10]))
    # The cases reach every outcome they should.
    assert counts["model: loader error"] and counts["model: same"]
    assert counts["model: as transformers"] and counts["tokenizer: loader error"]
