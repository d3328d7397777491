"""Hugging Face checkpoints in and out: parity with transformers' PyTorch BERT, round trips, and
the errors a bad checkpoint gives. PyTorch and transformers are the reference, used only here."""

import json
import logging
import os
import pickle
import re
import shutil
import zipfile

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxformer
from jaxformer.hf import CheckpointError, torch_pickle
from jaxformer.hf.config import HF_ACTIVATIONS
from jaxformer.kernels import cpu

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
# Non-default shapes everywhere, so a transposed or mis-split tensor cannot go unnoticed.
SMALL = dict(
    vocab_size=211,
    hidden_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=200,
    type_vocab_size=3,
    max_position_embeddings=40,
    num_labels=3,
)
SENTENCES = [
    "The movie was great!",
    "I did not enjoy this film at all; the plot was thin and the acting wooden.",
    "Okay.",
    "A slow start, but the last half hour of this Café-set drama is superb, really worth it.",
]


@pytest.fixture(autouse=True, scope="module")
def _torch_inference():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


def random_hf_model(cls, hidden_act="gelu", seed=0):
    """A transformers model of SMALL shape with every weight perturbed (non-zero biases, layer
    norm scales != 1), in eval mode."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(**SMALL, hidden_act=hidden_act)
    model = cls(config).eval()
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(seed=0, lengths=(12, 9, 5, 1)):
    """A right-padded batch with random token types: input_ids, attention_mask, token_type_ids."""
    rng = np.random.default_rng(seed)
    b, t = len(lengths), max(lengths)
    mask = (np.arange(t) < np.array(lengths)[:, None]).astype(np.int32)  # (b, t)
    ids = rng.integers(1, SMALL["vocab_size"], (b, t)) * mask
    types = rng.integers(0, SMALL["type_vocab_size"], (b, t)) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def torch_batch(batch):
    return {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in batch.items()}


def jax_apply(model, params, batch, **kwargs):
    return model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        **kwargs,
    )


def kernel_missing(choice: str) -> str | None:
    """Why the "cpu" or "mkl" kernel cannot exist on this machine, or None where it must build."""
    if jax.default_backend() != "cpu" or cpu._compiler() is None:
        return "the CPU kernels need XLA:CPU and a C++ compiler"
    if os.environ.get("JAXFORMER_CPU_KERNELS") == "0":
        return "JAXFORMER_CPU_KERNELS=0"
    if choice == "mkl" and cpu.mkl_dir() is None:
        return "the mkl wheel is not installed (pip install 'jaxformer[mkl]')"
    return None


def max_diff(ours, theirs, mask=None):
    """max |ours - theirs|, over the positions where mask (b, t) is 1 if given."""
    diff = np.abs(np.asarray(ours, np.float64) - theirs.double().numpy())
    return float(diff[np.asarray(mask, bool)].max() if mask is not None else diff.max())


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module", params=["relu", "gelu_new"])
def classifier_checkpoint(request, tmp_path_factory):
    """A random BertForSequenceClassification, saved by transformers (model.safetensors) and
    with torch.save (pytorch_model.bin): (model, {format: folder})."""
    model = random_hf_model(transformers.BertForSequenceClassification, request.param)
    root = tmp_path_factory.mktemp(f"classifier_{request.param}")
    model.save_pretrained(root / "safetensors")
    model.config.save_pretrained(root / "bin")
    torch.save(model.state_dict(), root / "bin" / "pytorch_model.bin")
    return model, {"safetensors": root / "safetensors", "bin": root / "bin"}


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A random BertModel saved by transformers: (model, folder)."""
    model = random_hf_model(transformers.BertModel, seed=1)
    folder = tmp_path_factory.mktemp("base")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def base_bin_dir(base_checkpoint, tmp_path_factory):
    """The base checkpoint as config.json + pytorch_model.bin (torch.save of the state dict)."""
    model, folder = base_checkpoint
    bin_dir = tmp_path_factory.mktemp("base_bin")
    shutil.copy(folder / "config.json", bin_dir)
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    return bin_dir


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


# --- Parity with transformers ---


@pytest.fixture(scope="module")
def minilm_torch(minilm_dir):
    return transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()


@pytest.mark.parametrize(
    "attention, matmul",
    [
        ("reference", "xla"),
        ("xla", "xla"),
        ("scan", "xla"),
        ("cpu", "xla"),
        ("cpu", "mkl"),  # "auto" on CPU with the mkl wheel installed
    ],
)
def test_minilm_matches_transformers(minilm_dir, minilm_torch, attention, matmul, caplog):
    kernels = {"cpu": cpu.attention_available, "mkl": cpu.mkl_available}
    for choice in {attention, matmul} & set(kernels):
        why = kernel_missing(choice)
        if why:
            pytest.skip(why)
        # Built before the log is captured below, and the kernel, not a fallback, is compared.
        assert kernels[choice](), f"the {choice!r} kernel can be built here: it must build"
    tok = jaxformer.load_tokenizer(minilm_dir)
    batch = tok(SENTENCES)
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    expected = hf_tok(SENTENCES, padding=True, return_tensors="np")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(batch[k], expected[k], err_msg=k)
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths)) == len(SENTENCES)  # all different, so padding is exercised

    with caplog.at_level(logging.INFO, logger="jaxformer"):
        model, params = jaxformer.from_pretrained(
            minilm_dir, task="base", attention=attention, matmul=matmul
        )
    assert not caplog.records  # complete checkpoint; embeddings.position_ids skipped silently
    (sequence, pooled), state = jax_apply(model, params, batch, mutable=["intermediates"])
    hidden = state["intermediates"]["hidden_states"]
    out = minilm_torch(**torch_batch(batch), output_hidden_states=True)

    mask = batch["attention_mask"]
    assert len(hidden) == len(out.hidden_states) == 7
    layer_diffs = [
        max_diff(ours, theirs, mask) for ours, theirs in zip(hidden, out.hidden_states, strict=True)
    ]
    sequence_diff = max_diff(sequence, out.last_hidden_state, mask)
    pooled_diff = max_diff(pooled, out.pooler_output)
    print(
        f"\nMiniLM {attention}, {matmul}: per-layer max|diff| "
        + " ".join(f"{d:.2e}" for d in layer_diffs)
        + f" | sequence {sequence_diff:.2e} | pooled {pooled_diff:.2e}"
    )
    assert max(layer_diffs) < TOL and sequence_diff < TOL and pooled_diff < TOL


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_random_classifier_matches_transformers(classifier_checkpoint, fmt):
    hf_model, folders = classifier_checkpoint
    model, params = jaxformer.from_pretrained(folders[fmt])
    assert model.config.num_labels == 3
    assert model.config.hidden_act == HF_ACTIVATIONS[hf_model.config.hidden_act]
    batch = random_batch()
    logits = jax_apply(model, params, batch)
    diff = max_diff(logits, hf_model(**torch_batch(batch)).logits)
    print(f"\nrandom classifier {hf_model.config.hidden_act} {fmt}: logits max|diff| {diff:.2e}")
    assert logits.shape == (4, 3) and diff < TOL


# --- Round trips ---


def test_round_trip_classifier(classifier_checkpoint, tmp_path, minilm_dir):
    _, folders = classifier_checkpoint
    model, params = jaxformer.from_pretrained(folders["safetensors"])
    tok = jaxformer.load_tokenizer(minilm_dir, max_length=64)
    out = jaxformer.save_pretrained(model, params, tmp_path / "export", tokenizer=tok)

    assert load_file(out / "model.safetensors")["classifier.weight"].dtype == np.float32
    reloaded = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    batch = random_batch(seed=1)
    diff = max_diff(jax_apply(model, params, batch), reloaded(**torch_batch(batch)).logits)
    print(f"\nround trip classifier: jax vs transformers(saved) logits max|diff| {diff:.2e}")
    assert diff < TOL

    model2, params2 = jaxformer.from_pretrained(out)
    assert model2.config == model.config
    assert_trees_equal(params2, params)
    # The tokenizer files make the folder self-contained, for transformers and for us.
    hf_ids = transformers.AutoTokenizer.from_pretrained(out)(SENTENCES)["input_ids"]
    assert [list(x) for x in jaxformer.load_tokenizer(out).encode_ids(SENTENCES)] == hf_ids


def test_round_trip_base(base_checkpoint, tmp_path):
    _, folder = base_checkpoint
    model, params = jaxformer.from_pretrained(folder, task="base")
    out = jaxformer.save_pretrained(model, params, tmp_path / "export")
    assert "bert.pooler.dense.weight" not in load_file(out / "model.safetensors")

    reloaded = transformers.BertModel.from_pretrained(out).eval()
    batch = random_batch(seed=2)
    sequence, pooled = jax_apply(model, params, batch)
    theirs = reloaded(**torch_batch(batch))
    diffs = (
        max_diff(sequence, theirs.last_hidden_state, batch["attention_mask"]),
        max_diff(pooled, theirs.pooler_output),
    )
    print(f"\nround trip base: sequence {diffs[0]:.2e} | pooled {diffs[1]:.2e}")
    assert max(diffs) < TOL
    assert_trees_equal(jaxformer.from_pretrained(out, task="base")[1], params)


def test_save_pretrained_replaces_files_and_keeps_others(base_checkpoint, tmp_path):
    _, folder = base_checkpoint
    model, params = jaxformer.from_pretrained(folder, task="base")
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("stale")
    jaxformer.save_pretrained(model, params, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary folder left

    with pytest.raises(ValueError, match="params do not fit the model"):
        jaxformer.save_pretrained(model, {"embeddings": params["embeddings"]}, tmp_path / "bad")

    class BrokenTokenizer:
        def save(self, folder):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):  # fails after writing the weights
        jaxformer.save_pretrained(model, params, tmp_path / "bad", tokenizer=BrokenTokenizer())
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # nothing half-written


# --- Checkpoint kinds ---


def test_base_checkpoint_gets_fresh_head(base_checkpoint, caplog):
    _, folder = base_checkpoint
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        model, params = jaxformer.from_pretrained(folder, task="classification", num_labels=5)
    assert "['classifier/bias', 'classifier/kernel']: initialised fresh" in caplog.text
    assert len(caplog.records) == 1
    head = params["classifier"]
    assert head["kernel"].shape == (96, 5) and not head["bias"].any()
    assert 0.01 < float(head["kernel"].std()) < 0.03  # normal(initializer_range=0.02)
    assert_trees_equal(params["bert"], jaxformer.from_pretrained(folder, task="base")[1])


def test_missing_pooler_is_initialised_and_reported(base_checkpoint, tmp_path, caplog):
    _, folder = base_checkpoint
    tensors = load_file(folder / "model.safetensors")
    del tensors["pooler.dense.weight"], tensors["pooler.dense.bias"]
    shutil.copy(folder / "config.json", tmp_path)
    save_file(tensors, tmp_path / "model.safetensors")
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        _, params = jaxformer.from_pretrained(tmp_path, task="base")
    assert "['pooler/bias', 'pooler/kernel']: initialised fresh" in caplog.text
    assert params["pooler"]["kernel"].shape == (96, 96)


def test_pretraining_checkpoint_reports_cls_unused(tmp_path, caplog):
    hf_model = random_hf_model(transformers.BertForPreTraining, seed=2)
    hf_model.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        model, params = jaxformer.from_pretrained(tmp_path, task="base")
    assert "unused checkpoint tensors" in caplog.text and "cls.predictions.bias" in caplog.text
    assert "cls.seq_relationship.weight" in caplog.text
    batch = random_batch(seed=3)
    diff = max_diff(jax_apply(model, params, batch)[1], hf_model.bert(**torch_batch(batch))[1])
    assert diff < TOL


def test_old_layer_norm_names(base_checkpoint, tmp_path):
    _, folder = base_checkpoint
    tensors = load_file(folder / "model.safetensors")
    old_names = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    renamed = {}
    for name, tensor in tensors.items():
        for new, old in old_names.items():
            name = name.replace(new, old)
        renamed[name] = tensor
    assert any(k.endswith("LayerNorm.gamma") for k in renamed)
    shutil.copy(folder / "config.json", tmp_path)
    save_file(renamed, tmp_path / "model.safetensors")
    expected = jaxformer.from_pretrained(folder, task="base")[1]
    assert_trees_equal(jaxformer.from_pretrained(tmp_path, task="base")[1], expected)


def write_shards(folder, tensors, config_from):
    """tensors split over two shards and model.safetensors.index.json: the index's weight_map."""
    names = sorted(tensors)
    weight_map = {}
    for shard, part in enumerate((names[::2], names[1::2])):
        file = f"model-{shard + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, folder / file)
        weight_map |= dict.fromkeys(part, file)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(config_from / "config.json", folder)
    return weight_map


def test_sharded_safetensors(base_checkpoint, tmp_path):
    _, folder = base_checkpoint
    write_shards(tmp_path, load_file(folder / "model.safetensors"), folder)
    expected = jaxformer.from_pretrained(folder, task="base")[1]
    assert_trees_equal(jaxformer.from_pretrained(tmp_path, task="base")[1], expected)


@pytest.fixture
def sharded_dir(base_checkpoint, tmp_path):
    """(folder, weight_map, tensors): the base checkpoint as two shards in tmp_path/ckpt."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    tensors = load_file(base_checkpoint[1] / "model.safetensors")
    return folder, write_shards(folder, tensors, base_checkpoint[1]), tensors


def rewrite_index(folder, index):
    path = folder / "model.safetensors.index.json"
    path.write_text(index if isinstance(index, str) else json.dumps(index))


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_sharded_index_may_not_leave_the_folder(sharded_dir, where):
    folder, weight_map, tensors = sharded_dir
    outside = folder.parent / "outside.safetensors"  # a real shard, so only the path is wrong
    save_file(tensors, outside)
    name = "../outside.safetensors" if where == "parent" else str(outside)
    rewrite_index(folder, {"weight_map": dict.fromkeys(weight_map, name)})
    with pytest.raises(
        CheckpointError,
        match=rf"ckpt/model\.safetensors\.index\.json names shard '{re.escape(name)}', outside "
        "the checkpoint folder",
    ):
        jaxformer.from_pretrained(folder, task="base")


@pytest.mark.parametrize(
    "index, message",
    [
        ('{"weight_map": {', r"index\.json is not valid JSON"),
        ("[1, 2]", r"index\.json holds a JSON list, not an object"),
        ('{"metadata": {}}', r"index\.json has no weight_map object"),
        ('{"weight_map": ["a"]}', r"index\.json has no weight_map object"),
        (
            '{"weight_map": {"embeddings.LayerNorm.bias": 3}}',
            r"index\.json names a shard 3, not a file name",
        ),
    ],
)
def test_sharded_index_that_is_not_an_index(sharded_dir, index, message):
    folder = sharded_dir[0]
    rewrite_index(folder, index)
    with pytest.raises(CheckpointError, match=rf"ckpt/model\.safetensors\.{message}"):
        jaxformer.from_pretrained(folder, task="base")


def test_sharded_index_names_a_missing_shard(sharded_dir):
    folder = sharded_dir[0]
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"index\.json names shard model-00002-of-00002\.safetensors, which is not in "
        r".*ckpt; download it too",
    ):
        jaxformer.from_pretrained(folder, task="base")


def test_sharded_index_maps_a_tensor_to_the_wrong_shard(sharded_dir):
    folder, weight_map, _ = sharded_dir
    name = next(k for k, f in weight_map.items() if f.startswith("model-00001"))
    rewrite_index(folder, {"weight_map": weight_map | {name: "model-00002-of-00002.safetensors"}})
    with pytest.raises(
        CheckpointError,
        match=rf"index\.json maps tensor '{re.escape(name)}' to .*ckpt/"
        r"model-00002-of-00002\.safetensors, which does not hold it",
    ):
        jaxformer.from_pretrained(folder, task="base")


def test_hub_id_of_minilm_resolves_to_the_installed_package(minilm_dir):
    assert jaxformer.resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2") == minilm_dir


def test_overrides_reach_the_config(base_checkpoint):
    _, folder = base_checkpoint
    model, params = jaxformer.from_pretrained(
        folder, dtype="bfloat16", param_dtype="bfloat16", hidden_dropout_prob=0.2
    )
    assert model.config.dtype == "bfloat16" and model.config.hidden_dropout_prob == 0.2
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("bfloat16")}
    model, _ = jaxformer.from_pretrained(folder, attention="scan", matmul="reference")
    assert (model.config.attention, model.config.matmul) == ("scan", "reference")
    with pytest.raises(TypeError, match="attention_impl"):  # not a BertConfig field
        jaxformer.from_pretrained(folder, attention_impl="einsum")


# --- The torch pickle reader ---


def test_torch_pickle_reads_what_torch_saves(tmp_path):
    state = {
        "plain": torch.randn(2, 3),
        "transposed": torch.randn(3, 2).t(),
        "offset": torch.randn(5)[2:4],
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1),
        "bf16": torch.randn(3).bfloat16(),
        "half": torch.randn(3).half(),
        "long": torch.arange(4),
        "empty": torch.zeros(0, 3),
    }
    torch.save(state, tmp_path / "x.bin")
    loaded = torch_pickle.load_state_dict(tmp_path / "x.bin")
    assert set(loaded) == set(state)
    for k, v in state.items():
        expected = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        assert loaded[k].shape == tuple(v.shape), k
        np.testing.assert_array_equal(loaded[k].astype(expected.dtype), expected, err_msg=k)
    assert loaded["bf16"].dtype.name == "bfloat16"


def test_torch_pickle_refuses_code(tmp_path):
    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": os.system}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|nt)\.system"):
        torch_pickle.load_state_dict(path)


# --- Errors: each names what is wrong, where, and what to do ---


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_safetensors(base_checkpoint, tmp_path):
    folder = copy_checkpoint(base_checkpoint[1], tmp_path / "ckpt")
    truncate(folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"ckpt/model\.safetensors is truncated or corrupt"):
        jaxformer.from_pretrained(folder, task="base")


def test_truncated_bin(base_bin_dir, tmp_path):
    folder = copy_checkpoint(base_bin_dir, tmp_path / "ckpt")
    truncate(folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"ckpt/pytorch_model\.bin is truncated or corrupt"):
        jaxformer.from_pretrained(folder, task="base")


def test_legacy_bin(base_bin_dir, tmp_path):
    folder = copy_checkpoint(base_bin_dir, tmp_path / "ckpt")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}, protocol=2))
    with pytest.raises(ValueError, match="legacy .* format.*re-save it"):
        jaxformer.from_pretrained(folder, task="base")


def test_config_disagrees_with_weights(base_checkpoint, tmp_path):
    folder = copy_checkpoint(base_checkpoint[1], tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"hidden_size": 128}))
    with pytest.raises(
        ValueError,
        match=r"'embeddings\.word_embeddings\.weight' in .*ckpt/model\.safetensors has shape "
        r"\(211, 96\), but the config expects \(211, 128\)",
    ):
        jaxformer.from_pretrained(folder, task="base")


def test_classifier_width_disagrees(classifier_checkpoint):
    with pytest.raises(ValueError, match="classifier has 3 labels: pass num_labels=3"):
        jaxformer.from_pretrained(classifier_checkpoint[1]["safetensors"], num_labels=2)


def test_config_missing_field(base_checkpoint, tmp_path):
    folder = copy_checkpoint(base_checkpoint[1], tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    del config["num_attention_heads"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"ckpt/config\.json lacks required field\(s\) \['num_attention_heads'\]"
    ):
        jaxformer.from_pretrained(folder)


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("hidden_size", "96", "an integer from 1"),
        ("hidden_size", 96.0, "an integer from 1"),
        ("num_attention_heads", 0, "an integer from 1"),
        ("num_attention_heads", True, "an integer from 1"),  # bool is an int subclass
        ("num_hidden_layers", -1, "an integer from 1"),
        ("num_hidden_layers", 0, "an integer from 1"),
        ("intermediate_size", -200, "an integer from 1"),
        ("vocab_size", 2**40, "an integer from 1 to 2147483647"),
        ("max_position_embeddings", None, "an integer from 1"),
        ("type_vocab_size", [3], "an integer from 1"),
        ("pad_token_id", -1, "a non-negative integer"),
        ("hidden_dropout_prob", 1.0, r"a number in \[0, 1\)"),
        ("attention_probs_dropout_prob", -0.1, r"a number in \[0, 1\)"),
        ("attention_probs_dropout_prob", "0.1", r"a number in \[0, 1\)"),
        ("classifier_dropout", False, r"a number in \[0, 1\) or null"),
        ("layer_norm_eps", 0, "a positive number"),
        ("layer_norm_eps", float("nan"), "a positive number"),
        ("initializer_range", -0.02, "a non-negative number"),
        ("hidden_act", "swish2", "one of \\('gelu'"),
        ("hidden_act", ["gelu"], "one of \\('gelu'"),
    ],
)
def test_config_field_of_the_wrong_type_or_range(base_checkpoint, tmp_path, field, value, why):
    folder = copy_checkpoint(base_checkpoint[1], tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {field: value}))
    shown = re.escape(repr(value))
    with pytest.raises(
        CheckpointError, match=rf"ckpt/config\.json: {field}={shown} is not valid; it must be {why}"
    ):
        jaxformer.from_pretrained(folder)


def test_config_heads_do_not_divide_the_width(base_checkpoint, tmp_path):
    folder = copy_checkpoint(base_checkpoint[1], tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"num_attention_heads": 5}))
    with pytest.raises(
        CheckpointError,
        match=r"ckpt/config\.json: hidden_size \(96\) must be divisible by num_attention_heads",
    ):
        jaxformer.from_pretrained(folder)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"hidden_size": ', "is not valid JSON"),
        (b"\xff\xfe{}", "is not valid JSON"),
        (
            '{"id2label": [0, 1], "vocab_size": 1, "hidden_size": 1, "num_hidden_layers": 1, '
            '"num_attention_heads": 1, "intermediate_size": 1}',
            r"id2label=\[0, 1\] is not an object",
        ),
    ],
)
def test_config_that_is_not_a_config(base_checkpoint, tmp_path, text, message):
    folder = copy_checkpoint(base_checkpoint[1], tmp_path / "ckpt")
    path = folder / "config.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(CheckpointError, match=rf"ckpt/config\.json:? {message}"):
        jaxformer.from_pretrained(folder)


def test_bad_override_is_not_blamed_on_the_file(base_checkpoint):
    with pytest.raises(ValueError, match=r"with overrides \['hidden_dropout_prob'\]") as info:
        jaxformer.from_pretrained(base_checkpoint[1], hidden_dropout_prob=1.5)
    assert not isinstance(info.value, CheckpointError)


def test_missing_tensors_are_listed(base_checkpoint, tmp_path):
    _, folder = base_checkpoint
    tensors = {k: v for k, v in load_file(folder / "model.safetensors").items() if ".1." not in k}
    shutil.copy(folder / "config.json", tmp_path)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"lacks 16 required tensor\(s\).*'encoder\.layer\.1\.attention"
    ):
        jaxformer.from_pretrained(tmp_path, task="base")


def test_half_a_classifier_is_not_completed_fresh(classifier_checkpoint, tmp_path):
    folder = classifier_checkpoint[1]["safetensors"]
    tensors = load_file(folder / "model.safetensors")
    del tensors["classifier.weight"]
    shutil.copy(folder / "config.json", tmp_path)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"lacks 1 required tensor\(s\).*'classifier\.weight'"
    ):
        jaxformer.from_pretrained(tmp_path)


def test_integer_weights_are_refused(base_checkpoint, tmp_path):
    _, folder = base_checkpoint
    tensors = load_file(folder / "model.safetensors")
    name = "encoder.layer.0.output.dense.weight"
    tensors[name] = tensors[name].view(np.int32)
    shutil.copy(folder / "config.json", tmp_path)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=rf"tensor '{re.escape(name)}' in .* is int32, not floating point"
    ):
        jaxformer.from_pretrained(tmp_path, task="base")


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint folder .*nope does not exist"):
        jaxformer.from_pretrained(tmp_path / "nope")


def test_folder_without_weights(base_checkpoint, tmp_path):
    shutil.copy(base_checkpoint[1] / "config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="has no weights file: expected model.safetensors"):
        jaxformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        jaxformer.from_pretrained(tmp_path)


def test_bad_task(base_checkpoint):
    with pytest.raises(ValueError, match="task='mlm'; choose one of"):
        jaxformer.from_pretrained(base_checkpoint[1], task="mlm")


def test_offline_hub_id(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    message = r"'jaxformer-test/no-such-model' is not a local folder.*download the checkpoint"
    with pytest.raises(OSError, match=message):
        jaxformer.from_pretrained("jaxformer-test/no-such-model")
    with pytest.raises(OSError, match=message):
        jaxformer.load_tokenizer("jaxformer-test/no-such-model")
