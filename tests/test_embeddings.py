"""Sentence embeddings (task="embedding", `jaxformer.embed`, embed.py) against transformers'
PyTorch base models with the pooling computed here from their last hidden states:
all-MiniLM-L6-v2 (mean over the attention mask, then L2 normalisation, as its modules.json
declares), and a small random model of every family with another pooling each; the errors of
sentence-transformers files jaxformer cannot follow; save_pretrained's folder read back by our
loader and by transformers' AutoModel; embed.py in a subprocess. PyTorch and transformers are
the reference, used only here."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxformer
from jaxformer import families
from jaxformer.embedding import load_embedder
from jaxformer.hf import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Okay.",
    "A slow start, but the last half hour of this Café-set drama is superb, really worth it.",
]
# Small random models of every family, in transformers' config fields, and the pooling each is
# given: (mode, normalize, the pooling config's spelling).
SHAPES = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
)
ROBERTA = SHAPES | dict(pad_token_id=1, type_vocab_size=1)
FAMILY_CONFIGS = {
    "bert": (SHAPES, ("mean", True, "legacy")),
    "roberta": (ROBERTA, ("cls", False, "legacy")),
    "xlm-roberta": (ROBERTA, ("mean_sqrt_len_tokens", False, "pooling_mode")),
    "camembert": (ROBERTA, ("mean", True, "pooling_mode")),
    "distilbert": (
        dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, hidden_dim=48),
        ("max", False, "legacy"),
    ),
    "electra": (SHAPES | dict(embedding_size=24), ("max", True, "pooling_mode")),
    "albert": (SHAPES | dict(embedding_size=16), ("cls", True, "pooling_mode")),
    "deberta": (
        SHAPES
        | dict(
            relative_attention=True,
            max_relative_positions=4,
            pos_att_type="c2p|p2c",
            position_biased_input=False,
        ),
        ("mean_sqrt_len_tokens", True, "pooling_mode"),
    ),
    "deberta-v2": (
        SHAPES
        | dict(
            relative_attention=True,
            position_buckets=8,
            max_relative_positions=16,
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            position_biased_input=False,
            type_vocab_size=0,
        ),
        ("mean", False, "legacy"),
    ),
    "modernbert": (
        SHAPES
        | dict(
            global_attn_every_n_layers=2,
            local_attention=8,  # a window shorter than the longest row
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
        ),
        ("max", False, "pooling_mode"),
    ),
    "mpnet": (SHAPES | dict(pad_token_id=1), ("mean", True, "legacy")),  # all-mpnet-base-v2's
}
LENGTHS = (11, 6, 3, 1)  # a padded batch of uneven lengths
NORMALIZE = "sentence_transformers.models.Normalize"
LEGACY_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


@pytest.fixture(autouse=True, scope="module")
def _torch_inference():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


def pool(hidden, mask, mode, normalize):
    """sentence-transformers' Pooling (and Normalize) on torch's last hidden states, in float64."""
    h, m = np.asarray(hidden, np.float64), np.asarray(mask, np.float64)[..., None]
    if mode == "mean":
        e = (h * m).sum(1) / m.sum(1)
    elif mode == "mean_sqrt_len_tokens":
        e = (h * m).sum(1) / np.sqrt(m.sum(1))
    elif mode == "cls":
        e = h[:, 0]
    else:
        e = np.where(m > 0, h, -np.inf).max(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True) if normalize else e


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def torch_hidden(hf_model, batch):
    inputs = {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in batch.items()}
    return hf_model(**inputs).last_hidden_state.numpy()


def write_pooling(folder, mode, normalize=False, spelling="legacy", width=32, extra=()):
    """A sentence-transformers modules.json and 1_Pooling/config.json, written by hand."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE})
    modules += list(extra)
    (folder / "modules.json").write_text(json.dumps(modules))
    if spelling == "legacy":
        modes = mode.split("+")
        config = {"word_embedding_dimension": width} | {
            k: v in modes for v, k in LEGACY_KEYS.items()
        }
    else:
        config = {"embedding_dimension": width, "pooling_mode": mode, "include_prompt": True}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))


# --- all-MiniLM-L6-v2 ---


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return jaxformer.from_pretrained(minilm_dir, task="embedding")


@pytest.fixture(scope="module")
def reference(minilm_dir):
    """Sentence embeddings of `texts` by transformers' tokenizer and PyTorch BertModel, mean
    pooled over the attention mask and L2-normalised; and the tokenized batch."""
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    hf_model = transformers.BertModel.from_pretrained(minilm_dir).eval()

    def embed(texts, folder=None):
        batch = dict(tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np"))
        model = hf_model if folder is None else transformers.AutoModel.from_pretrained(folder)
        return pool(torch_hidden(model.eval(), batch), batch["attention_mask"], "mean", True), batch

    return embed


def test_minilm_equals_transformers_mean_pooled_and_normalised(minilm, reference):
    model, params = minilm
    assert type(model).__name__ == "BertForSentenceEmbedding"
    assert (model.pooling, model.normalize) == ("mean", True)
    assert families.task_of(model) == "embedding"
    assert "pooler" not in params and set(params) == {"embeddings"} | {
        f"layer_{i}" for i in range(6)
    }
    want, batch = reference(SENTENCES)
    assert len(set(batch["attention_mask"].sum(1))) == len(SENTENCES)  # all lengths differ
    ours = model.apply({"params": params}, *(batch[k] for k in ("input_ids", "attention_mask")))
    ours = np.asarray(ours)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    assert cosines(ours, want).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_embed_equals_transformers(minilm_dir, reference):
    want, _ = reference(SENTENCES)
    got = jaxformer.embed(SENTENCES, model=minilm_dir)
    assert got.shape == (5, 384) and got.dtype == np.float32 and isinstance(got, np.ndarray)
    assert cosines(got, want).min() >= 0.99999
    # Several batches (length-sorted, filler rows, other buckets) give the same rows, in order.
    np.testing.assert_allclose(jaxformer.embed(SENTENCES, minilm_dir, batch_size=2), got, atol=1e-5)
    np.testing.assert_allclose(jaxformer.embed(SENTENCES[3], minilm_dir), got[3:4], atol=1e-5)
    assert load_embedder(minilm_dir) is load_embedder(minilm_dir)  # loaded once
    assert load_embedder(minilm_dir).max_length == 256  # sentence_bert_config.json's
    np.testing.assert_allclose(jaxformer.embed(SENTENCES[:2]), got[:2], atol=1e-5)  # the Hub id
    assert jaxformer.embed([], minilm_dir).shape == (0, 384)


def test_embed_errors(minilm_dir):
    with pytest.raises(ValueError, match=r"max_length=600, but the model takes at most 512"):
        jaxformer.embed(SENTENCES, minilm_dir, max_length=600)
    with pytest.raises(ValueError, match=r"batch_size=0; it must be a positive integer"):
        jaxformer.embed(SENTENCES, minilm_dir, batch_size=0)


def test_save_pretrained_writes_a_sentence_transformers_folder(
    minilm, minilm_dir, reference, tmp_path
):
    model, params = minilm
    tok = jaxformer.load_tokenizer(minilm_dir, max_length=256)
    out = jaxformer.save_pretrained(model, params, tmp_path / "saved", tokenizer=tok)
    modules = json.loads((out / "modules.json").read_text())
    assert [(m["path"], m["type"]) for m in modules] == [
        ("", "sentence_transformers.models.Transformer"),
        ("1_Pooling", "sentence_transformers.models.Pooling"),
        ("2_Normalize", "sentence_transformers.models.Normalize"),
    ]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling.pop("word_embedding_dimension") == 384
    assert {k for k, v in pooling.items() if v} == {"pooling_mode_mean_tokens"}
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]

    again, params_again = jaxformer.from_pretrained(out, task="embedding")
    assert (again.pooling, again.normalize) == ("mean", True)
    jax.tree.map(np.testing.assert_array_equal, params_again, params)
    hf_model, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(hf_model).__name__ == "BertModel" and not info["unexpected_keys"]
    assert all(k.startswith("pooler.") for k in info["missing_keys"])  # never read for embeddings
    want, _ = reference(SENTENCES, folder=out)
    assert cosines(jaxformer.embed(SENTENCES, out), want).min() >= 0.99999


# --- Every family, every pooling ---


def random_hf_model(model_type, seed=0):
    """A transformers base model of `model_type` with every weight perturbed, in eval mode."""
    fields, _ = FAMILY_CONFIGS[model_type]
    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(model_type, **fields)
    config._attn_implementation = "sdpa" if model_type == "modernbert" else "eager"
    model = transformers.AutoModel.from_config(config).eval()
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(model_type, seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(max(LENGTHS)) < np.array(LENGTHS)[:, None]).astype(np.int32)
    pad = FAMILY_CONFIGS[model_type][0].get("pad_token_id", 0)
    ids = np.where(mask == 1, rng.integers(3, 97, mask.shape), pad)
    return {"input_ids": ids.astype(np.int32), "attention_mask": mask}


def test_every_family_has_a_config_here():
    assert set(FAMILY_CONFIGS) == set(families.FAMILIES)


@pytest.mark.parametrize("model_type", list(FAMILY_CONFIGS))
def test_every_family_embeds_as_transformers_pooled(model_type, tmp_path):
    mode, normalize, spelling = FAMILY_CONFIGS[model_type][1]
    hf_model = random_hf_model(model_type)
    hf_model.save_pretrained(tmp_path)
    write_pooling(tmp_path, mode, normalize, spelling)
    model, params = jaxformer.from_pretrained(tmp_path, task="embedding")
    assert (model.pooling, model.normalize) == (mode, normalize)
    base, base_params = jaxformer.from_pretrained(tmp_path, task="base")
    pooler = {"pooler"} if getattr(base, "add_pooling_layer", False) else set()
    assert set(params) == set(base_params) - pooler  # the base model's tree, no pooler

    batch = random_batch(model_type)
    want = pool(torch_hidden(hf_model, batch), batch["attention_mask"], mode, normalize)
    ours = np.asarray(model.apply({"params": params}, batch["input_ids"], batch["attention_mask"]))
    assert ours.shape == (len(LENGTHS), 32) and ours.dtype == np.float32
    assert np.abs(ours - want).max() < TOL

    saved = jaxformer.save_pretrained(model, params, tmp_path / "saved")
    again, params_again = jaxformer.from_pretrained(saved, task="embedding")
    assert (again.pooling, again.normalize) == (mode, normalize)
    got = again.apply({"params": params_again}, batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(np.asarray(got), ours, rtol=0, atol=1e-6)


def test_save_over_an_existing_folder_replaces_the_pooling(tmp_path):
    random_hf_model("bert").save_pretrained(tmp_path)
    write_pooling(tmp_path, "mean", normalize=True)
    model, params = jaxformer.from_pretrained(tmp_path, task="embedding")
    jaxformer.save_pretrained(model.clone(pooling="cls", normalize=False), params, tmp_path)
    again, _ = jaxformer.from_pretrained(tmp_path, task="embedding")
    assert (again.pooling, again.normalize) == ("cls", False)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]


# --- sentence-transformers files jaxformer cannot follow ---


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    random_hf_model("bert").save_pretrained(folder)
    return folder


@pytest.fixture
def folder(tiny_bert, tmp_path):
    return Path(shutil.copytree(tiny_bert, tmp_path / "model"))


def test_a_plain_transformers_folder_mean_pools_and_says_so(folder, caplog):
    with caplog.at_level(logging.WARNING):
        model, _ = jaxformer.from_pretrained(folder, task="embedding")
    assert (model.pooling, model.normalize) == ("mean", False)
    said = [r for r in caplog.records if "modules.json" in r.getMessage()]
    assert len(said) == 1 and "mean pooling" in said[0].getMessage()
    assert str(folder) in said[0].getMessage()


DENSE = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
POOLING_FILE = r"1_Pooling/config\.json asks for "
# name: (pooling mode, its spelling, modules after the Pooling, the one error line).
UNSUPPORTED = {
    "weightedmean": (
        "weightedmean",
        "legacy",
        (),
        POOLING_FILE + r"pooling mode 'weightedmean', which jaxformer does not have; it pools "
        r"mean, cls, max, mean_sqrt_len_tokens",
    ),
    "lasttoken": ("lasttoken", "pooling_mode", (), POOLING_FILE + r"pooling mode 'lasttoken'"),
    "two_modes_legacy": (
        "mean+max",
        "legacy",
        (),
        POOLING_FILE + r"2 pooling modes at once \(max \+ mean, concatenated\)",
    ),
    "two_modes_list": (
        ["cls", "mean"],
        "pooling_mode",
        (),
        POOLING_FILE + r"2 pooling modes at once \(cls \+ mean",
    ),
    "dense_module": (
        "mean",
        "legacy",
        (DENSE,),
        r"modules\.json: module 2 \('sentence_transformers\.models\.Dense', path '3_Dense'\) is "
        r"not one jaxformer's embedding task holds",
    ),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_pooling_is_one_error_naming_the_file(folder, case):
    mode, spelling, extra, match = UNSUPPORTED[case]
    write_pooling(folder, mode if isinstance(mode, str) else "mean", spelling=spelling, extra=extra)
    if not isinstance(mode, str):  # a list of modes, sentence-transformers' newer spelling
        path = folder / "1_Pooling" / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"pooling_mode": mode}))
    with pytest.raises(CheckpointError, match=match) as e:
        jaxformer.from_pretrained(folder, task="embedding")
    assert str(folder) in str(e.value) and "\n" not in str(e.value)


def test_other_broken_sentence_transformers_files(folder):
    write_pooling(folder, "mean", width=48)
    with pytest.raises(CheckpointError, match=r"pooled vectors are 48 wide, but config\.json's "):
        jaxformer.from_pretrained(folder, task="embedding")
    shutil.rmtree(folder / "1_Pooling")
    with pytest.raises(FileNotFoundError, match=r"1_Pooling/config\.json does not exist"):
        jaxformer.from_pretrained(folder, task="embedding")
    (folder / "modules.json").write_text(json.dumps([{"path": "", "type": "Transformer"}]))
    with pytest.raises(CheckpointError, match=r"modules\.json lists no Pooling module"):
        jaxformer.from_pretrained(folder, task="embedding")
    (folder / "modules.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"modules\.json is not valid JSON"):
        jaxformer.from_pretrained(folder, task="embedding")


# --- embed.py ---


def run_embed(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "embed.py", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_embed_script_writes_one_row_per_line(minilm_dir, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"A man is eating food.\r\n\nnot utf-8: \xff\xfe here\nOkay.")
    r = run_embed(f"--model={minilm_dir}", f"--input={lines}", f"--output={tmp_path / 'e.npy'}")
    assert r.returncode == 0, r.stderr
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    texts = ["A man is eating food.", "", "not utf-8: \ufffd\ufffd here", "Okay."]
    np.testing.assert_allclose(vectors, jaxformer.embed(texts, minilm_dir), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "lines.txt"]  # no temp file


@pytest.mark.parametrize("problem", ["missing_input", "empty_input", "missing_output_folder"])
def test_embed_script_errors_are_one_line(tmp_path, problem):
    lines, out = tmp_path / "lines.txt", tmp_path / "e.npy"
    lines.write_text("" if problem == "empty_input" else "a line\n")
    if problem == "missing_input":
        lines = tmp_path / "missing.txt"
    if problem == "missing_output_folder":
        out = tmp_path / "nowhere" / "e.npy"
    r = run_embed(f"--input={lines}", f"--output={out}")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(lines if problem != "missing_output_folder" else out.parent) in errors[0]
    assert not out.exists()
