"""Every BERT task head, both ways: a random transformers BertFor<Task> loaded by
`jaxformer.from_pretrained` matches it; `jaxformer.save_pretrained` writes a folder that
transformers' AutoModelFor<Task> loads with nothing missing or unexpected, and that matches too.
Then the loading rules (fresh, unused, half a head, tied decoder) and label names.
PyTorch and transformers are the reference, used only here."""

import json
import logging
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxformer
from jaxformer.hf import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
# Odd, non-default shapes, so a transposed or mis-split tensor cannot go unnoticed.
SHAPES = dict(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=50,
    type_vocab_size=3,
    max_position_embeddings=40,
    hidden_act="gelu",
)
LENGTHS = (13, 8, 4, 1)  # a padded batch of uneven lengths
CHOICE_LENGTHS = ((9, 6, 2), (4, 11, 7))  # (b=2, choices=3)
# task: (transformers class, Auto class, num_labels of the random checkpoint)
HEADS = {
    "base": ("BertModel", "AutoModel", 2),
    "classification": ("BertForSequenceClassification", "AutoModelForSequenceClassification", 5),
    "token_classification": ("BertForTokenClassification", "AutoModelForTokenClassification", 5),
    "question_answering": ("BertForQuestionAnswering", "AutoModelForQuestionAnswering", 2),
    "multiple_choice": ("BertForMultipleChoice", "AutoModelForMultipleChoice", 5),
    "masked_lm": ("BertForMaskedLM", "AutoModelForMaskedLM", 2),
}


CONVERTER = "jaxformer.hf.convert"  # its log says what was fresh, unused or not loaded


def converter_records(caplog):
    return [r for r in caplog.records if r.name == CONVERTER]


@pytest.fixture(autouse=True, scope="module")
def _torch_inference():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(previous)


def random_hf_model(class_name, num_labels=2, seed=0, **config):
    """A transformers model of SHAPES with every weight perturbed (non-zero biases, layer norm
    scales != 1), in eval mode, with eager attention."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(**SHAPES, num_labels=num_labels, **config)
    config._attn_implementation = "eager"
    model = getattr(transformers, class_name)(config).eval()
    for p in model.parameters():  # a tied tensor is one parameter: perturbed once
        p.add_(0.05 * torch.randn_like(p))
    return model


def random_batch(task, seed=0):
    """Right-padded input_ids, attention_mask, token_type_ids: (b, t), or (b, choices, t)."""
    rng = np.random.default_rng(seed)
    lengths = np.array(CHOICE_LENGTHS if task == "multiple_choice" else LENGTHS)
    t = lengths.max()
    mask = (np.arange(t) < lengths[..., None]).astype(np.int32)
    ids = rng.integers(1, SHAPES["vocab_size"], mask.shape) * mask
    types = rng.integers(0, SHAPES["type_vocab_size"], mask.shape) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def ours(model, params, batch):
    """{output name: array} of our model."""
    out = model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    )
    if isinstance(out, tuple):
        return dict(out._asdict())
    return {"logits": out}


def theirs(hf_model, batch):
    """{output name: tensor} of a transformers model, named as ours."""
    out = hf_model(**{k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()})
    if isinstance(hf_model, transformers.BertModel):
        return {"sequence_output": out.last_hidden_state, "pooled_output": out.pooler_output}
    if isinstance(hf_model, transformers.BertForQuestionAnswering):
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    if isinstance(hf_model, transformers.BertForPreTraining):
        return {"logits": out.prediction_logits}
    return {"logits": out.logits}


def max_diffs(task, mine, reference, batch):
    """{output: max |ours - theirs|}, at real tokens for per-token outputs."""
    assert set(mine) == set(reference)
    mask = np.asarray(batch["attention_mask"], bool)
    diffs = {}
    for name, a in mine.items():
        b = reference[name].double().numpy()
        a = np.asarray(a, np.float64)
        assert a.shape == b.shape, name
        diff = np.abs(a - b)
        per_token = task != "multiple_choice" and diff.shape[:2] == mask.shape
        diffs[name] = float((diff[mask] if per_token else diff).max())
    return diffs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{task: (random transformers model, the folder it saved)}."""
    out = {}
    for task, (class_name, _, num_labels) in HEADS.items():
        model = random_hf_model(class_name, num_labels, seed=len(out))
        folder = tmp_path_factory.mktemp(task)
        model.save_pretrained(folder)
        out[task] = model, folder
    return out


@pytest.mark.parametrize("task", list(HEADS))
def test_head_matches_transformers_both_ways(task, checkpoints, tmp_path, caplog):
    class_name, auto_name, num_labels = HEADS[task]
    hf_model, folder = checkpoints[task]
    batch = random_batch(task)

    with caplog.at_level(logging.INFO, logger=CONVERTER):
        model, params = jaxformer.from_pretrained(folder, task=task)
    assert not converter_records(caplog), caplog.text  # the whole head loaded, nothing left over
    assert type(model).__name__ == class_name
    load = max_diffs(task, ours(model, params, batch), theirs(hf_model, batch), batch)

    out = jaxformer.save_pretrained(model, params, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["architectures"] == [class_name]
    reloaded, info = getattr(transformers, auto_name).from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    reloaded.eval()
    assert type(reloaded).__name__ == class_name
    assert {k: v for k, v in info.items() if v} == {}, info  # nothing missing or unexpected
    assert reloaded.config.num_labels == num_labels
    export = max_diffs(task, ours(model, params, batch), theirs(reloaded, batch), batch)

    print(
        f"\n{task}: transformers -> ours "
        + " ".join(f"{k} {v:.2e}" for k, v in load.items())
        + " | ours -> transformers "
        + " ".join(f"{k} {v:.2e}" for k, v in export.items())
    )
    assert max(load.values()) < TOL and max(export.values()) < TOL

    if task == "masked_lm":  # tied: no decoder weight of ours, none written, tied on reload
        assert sorted(params["mlm"]) == ["bias", "layer_norm", "transform"]
        assert not any("decoder" in k for k in load_file(out / "model.safetensors"))
        decoder = reloaded.get_output_embeddings().weight
        assert decoder is reloaded.get_input_embeddings().weight
        assert torch.equal(decoder, hf_model.bert.embeddings.word_embeddings.weight)

    model2, params2 = jaxformer.from_pretrained(out, task=task)
    assert model2.config == model.config
    assert jax.tree.all(jax.tree.map(np.array_equal, params2, params))


def test_multiple_choice_shapes(checkpoints):
    model, params = jaxformer.from_pretrained(checkpoints["multiple_choice"][1], "multiple_choice")
    batch = random_batch("multiple_choice")
    assert ours(model, params, batch)["logits"].shape == (2, 3)  # (b, choices)
    flat = {k: v.reshape(6, -1) for k, v in batch.items()}
    with pytest.raises(ValueError, match=r"\(batch, choices, length\).*input_ids has shape \(6,"):
        ours(model, params, flat)


# --- Loading rules ---


FRESH = {
    "token_classification": ["classifier/bias", "classifier/kernel"],
    "question_answering": ["qa_outputs/bias", "qa_outputs/kernel"],
    "multiple_choice": ["classifier/bias", "classifier/kernel"],
    "masked_lm": [
        "mlm/bias",
        "mlm/layer_norm/bias",
        "mlm/layer_norm/scale",
        "mlm/transform/bias",
        "mlm/transform/kernel",
    ],
}


@pytest.mark.parametrize("task", list(FRESH))
def test_base_checkpoint_gets_a_fresh_head(task, checkpoints, caplog):
    folder = checkpoints["base"][1]
    with caplog.at_level(logging.INFO, logger=CONVERTER):
        model, params = jaxformer.from_pretrained(folder, task=task)
    assert f"{FRESH[task]}: initialised fresh" in caplog.text
    head = jax.tree_util.tree_flatten_with_path({k: v for k, v in params.items() if k != "bert"})
    for path, leaf in head[0]:
        name = "/".join(p.key for p in path)
        if name.endswith("kernel"):
            assert 0.01 < float(leaf.std()) < 0.03, name  # normal(initializer_range=0.02)
        else:  # layer norm scale 1, biases 0, as transformers initialises them
            np.testing.assert_array_equal(leaf, 1.0 if name.endswith("scale") else 0.0)
    base = jaxformer.from_pretrained(folder, task="base")[1]
    if not model.pooled:  # the checkpoint's pooler has no place in this head: reported
        del base["pooler"]
        assert (
            "unused checkpoint tensors (2): ['pooler.dense.bias', 'pooler.dense.weight']"
            in caplog.text
        )
    assert jax.tree.all(jax.tree.map(np.array_equal, params["bert"], base))


@pytest.mark.parametrize("task", [t for t in HEADS if t != "base"])
def test_head_checkpoint_as_base_reports_the_head_unused(task, checkpoints, caplog):
    hf_model, folder = checkpoints[task]
    head = sorted(k for k in load_file(folder / "model.safetensors") if not k.startswith("bert."))
    with caplog.at_level(logging.INFO, logger=CONVERTER):
        model, params = jaxformer.from_pretrained(folder, task="base")
    assert f"unused checkpoint tensors ({len(head)}): {head}" in caplog.text
    batch = random_batch("base")
    sequence = {"sequence_output": ours(model, params, batch)["sequence_output"]}
    expected = {"sequence_output": theirs(hf_model.bert, batch)["sequence_output"]}
    assert max_diffs("base", sequence, expected, batch)["sequence_output"] < TOL


def test_pretraining_checkpoint_gives_masked_lm_its_head(tmp_path, caplog):
    hf_model = random_hf_model("BertForPreTraining", seed=7)
    hf_model.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger=CONVERTER):
        model, params = jaxformer.from_pretrained(tmp_path, task="masked_lm")
    assert "initialised fresh" not in caplog.text
    unused = [
        "bert.pooler.dense.bias",
        "bert.pooler.dense.weight",
        "cls.seq_relationship.bias",
        "cls.seq_relationship.weight",
    ]
    assert f"unused checkpoint tensors (4): {unused}" in caplog.text
    batch = random_batch("masked_lm")
    diff = max_diffs("masked_lm", ours(model, params, batch), theirs(hf_model, batch), batch)
    print(f"\npretraining -> masked_lm: logits {diff['logits']:.2e}")
    assert diff["logits"] < TOL


def rewrite(folder, dst, change):
    """A copy of the checkpoint in `folder` at `dst` with its tensors changed by `change`."""
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    dst.mkdir()
    shutil.copy(folder / "config.json", dst)
    save_file(tensors, dst / "model.safetensors")
    return dst


@pytest.mark.parametrize(
    "task, name",
    [
        ("token_classification", "classifier.bias"),
        ("question_answering", "qa_outputs.weight"),
        ("multiple_choice", "classifier.weight"),
        ("masked_lm", "cls.predictions.transform.LayerNorm.weight"),
        ("masked_lm", "cls.predictions.bias"),
    ],
)
def test_half_a_head_is_an_error(task, name, checkpoints, tmp_path):
    folder = rewrite(checkpoints[task][1], tmp_path / "ckpt", lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=rf"lacks 1 required tensor\(s\).*'{name}'"):
        jaxformer.from_pretrained(folder, task=task)


def test_tied_decoder_is_accepted_when_equal(checkpoints, tmp_path, caplog):
    folder = checkpoints["masked_lm"][1]

    def add_tied(t):  # as older transformers versions (and TF ports) saved them
        t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"].copy()
        t["cls.predictions.decoder.bias"] = t["cls.predictions.bias"].copy()

    with caplog.at_level(logging.INFO, logger=CONVERTER):
        _, params = jaxformer.from_pretrained(
            rewrite(folder, tmp_path / "a", add_tied), "masked_lm"
        )
    assert not converter_records(caplog), caplog.text
    expected = jaxformer.from_pretrained(folder, task="masked_lm")[1]
    assert jax.tree.all(jax.tree.map(np.array_equal, params, expected))


def test_untied_decoder_is_reported(checkpoints, tmp_path, caplog):
    def add_untied(t):
        t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"] + 1

    folder = rewrite(checkpoints["masked_lm"][1], tmp_path / "ckpt", add_untied)
    with caplog.at_level(logging.INFO, logger=CONVERTER):
        jaxformer.from_pretrained(folder, task="masked_lm")
    warning = [r for r in converter_records(caplog) if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "cls.predictions.decoder.weight in " in warning[0].getMessage()
    assert "not equal to bert.embeddings.word_embeddings.weight" in warning[0].getMessage()
    assert "unused checkpoint tensors (1): ['cls.predictions.decoder.weight']" in caplog.text


def test_head_of_another_width_is_an_error(checkpoints):
    with pytest.raises(CheckpointError, match="a multiple_choice head has 1 output"):
        jaxformer.from_pretrained(checkpoints["classification"][1], task="multiple_choice")
    with pytest.raises(CheckpointError, match="classifier has 5 labels: pass num_labels=5"):
        jaxformer.from_pretrained(checkpoints["token_classification"][1], "token_classification", 3)


def test_unsupported_task_and_num_labels(checkpoints, caplog):
    folder = checkpoints["base"][1]
    with pytest.raises(ValueError, match=r"task='ner'; choose one of \('classification', 'base', "):
        jaxformer.from_pretrained(folder, task="ner")
    # num_labels is taken for every task, as transformers takes it, and logged where unused.
    with caplog.at_level(logging.INFO, logger="jaxformer"):
        for task, n in (("masked_lm", 3), ("question_answering", 5), ("base", 4)):
            model, _ = jaxformer.from_pretrained(folder, task=task, num_labels=n)
            assert f"num_labels={n} is unused: task={task!r}" in caplog.text
    assert model.config.num_labels == 2


# --- Label names ---

NAMES = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


@pytest.fixture(scope="module")
def named_checkpoint(tmp_path_factory):
    """A token classifier whose config names its 5 labels."""
    model = random_hf_model(
        "BertForTokenClassification",
        len(NAMES),
        id2label=dict(enumerate(NAMES)),
        label2id={n: i for i, n in enumerate(NAMES)},
        seed=11,
    )
    folder = tmp_path_factory.mktemp("named")
    model.save_pretrained(folder)
    return folder


def test_label_names_round_trip(named_checkpoint, tmp_path):
    assert json.loads((named_checkpoint / "config.json").read_text())["id2label"]["1"] == "B-PER"
    model, params = jaxformer.from_pretrained(named_checkpoint, task="token_classification")
    assert model.config.label_names == NAMES and model.config.num_labels == 5
    out = jaxformer.save_pretrained(model, params, tmp_path / "export")
    config = transformers.AutoConfig.from_pretrained(out)
    assert config.id2label == dict(enumerate(NAMES))
    assert config.label2id == {n: i for i, n in enumerate(NAMES)}


def test_label_names_overrides(named_checkpoint, checkpoints, tmp_path):
    # Another width is another head: the names go with the old one.
    model, _ = jaxformer.from_pretrained(checkpoints["base"][1], "token_classification", 3)
    assert model.config.label_names is None
    model, _ = jaxformer.from_pretrained(named_checkpoint, "token_classification", 5)
    assert model.config.label_names == NAMES
    # Names given set the width; a fresh head for them on a base checkpoint.
    model, params = jaxformer.from_pretrained(
        checkpoints["base"][1], label_names=("neg", "pos", "mixed")
    )
    assert model.config.num_labels == 3 and model.config.label_names == ("neg", "pos", "mixed")
    assert params["classifier"]["kernel"].shape == (36, 3)
    out = jaxformer.save_pretrained(model, params, tmp_path / "export")
    assert transformers.AutoConfig.from_pretrained(out).id2label == {0: "neg", 1: "pos", 2: "mixed"}
    with pytest.raises(ValueError, match="label_names has 2 names but num_labels=3"):
        jaxformer.from_pretrained(checkpoints["base"][1], num_labels=3, label_names=("a", "b"))
    # The defaults are no names at all, so a default config survives a round trip unchanged.
    default = jaxformer.BertConfig(num_labels=2, label_names=("LABEL_0", "LABEL_1"))
    assert default.label_names is None and default == jaxformer.BertConfig()


@pytest.mark.parametrize(
    "id2label",
    [{"0": "a", "2": "b"}, {"1": "a"}, {"0": "a", "1": 3}, {"00": "a"}, {}],
)
def test_bad_id2label(named_checkpoint, tmp_path, id2label):
    folder = shutil.copytree(named_checkpoint, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"id2label": id2label}))
    with pytest.raises(CheckpointError, match=r"ckpt/config\.json: id2label=.* is not"):
        jaxformer.from_pretrained(folder, task="token_classification")
