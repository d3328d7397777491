"""ModernBERT, every task, both ways: a random transformers ModernBert model of odd shapes (two
kinds of layer, a window shorter than the batch's longest sequence, some biases on) loaded by
`jaxformer.from_pretrained` matches it at real tokens, with "cls" and "mean" pooling;
`jaxformer.save_pretrained` writes a folder transformers' AutoModelFor<Task> loads with nothing
missing or unexpected, and that matches too. Then every layer's hidden states, bfloat16, and
the config.json keys of older transformers. PyTorch and transformers are the reference, used only
here (through tests/hf_parity.py; sdpa attention: transformers' padded path, the window a
mask)."""

import json

import hf_parity
import pytest

import jaxformer

VOCAB = 101
# Odd shapes; layers 0 and 3 global, 1 and 2 local with a window of 8 < the longest 20 tokens.
SHAPES = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=40,
    global_attn_every_n_layers=3,
    local_attention=8,
    global_rope_theta=1000.0,  # not the default, so swapping the two thetas shows
    local_rope_theta=50.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
    norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    classifier_activation="silu",  # another than hidden_activation, so a swap shows
)
# Which biases a model has: none (ModernBERT's default) and, with the other pooling, some.
VARIANTS = {
    "cls": dict(classifier_pooling="cls"),
    "mean": dict(
        classifier_pooling="mean", attention_bias=True, norm_bias=True, classifier_bias=True
    ),
}
LENGTHS = (20, 13, 7, 1)  # a padded batch of uneven lengths
CHOICE_LENGTHS = ((17, 6, 2), (9, 20, 11))  # (b=2, choices=3)


def random_hf_model(task, variant="cls", seed=0, **fields):
    """A transformers ModernBert model of SHAPES and VARIANTS[variant], every weight perturbed,
    sdpa attention."""
    fields = SHAPES | VARIANTS[variant] | fields
    return hf_parity.random_hf_model("ModernBert", fields, task, seed, attention="sdpa")


def random_batch(task):
    """Padding 0; real tokens from 3 on."""
    return hf_parity.random_batch(
        task, vocab=VOCAB, low=3, lengths=LENGTHS, choice_lengths=CHOICE_LENGTHS
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("task", hf_parity.TASKS)
def test_modernbert_matches_transformers_both_ways(task, variant, tmp_path):
    hf_model = random_hf_model(task, variant, seed=len(task))
    batch = random_batch(task)
    label = f"modernbert ({variant})"
    model, back = hf_parity.assert_matches_both_ways(hf_model, task, batch, tmp_path, label)
    assert model.config.model_type == "modernbert"
    assert model.config.classifier_pooling == variant
    assert back.config.layer_types == hf_model.config.layer_types
    assert back.config.rope_parameters == hf_model.config.rope_parameters
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
        assert getattr(back.config, name) == getattr(hf_model.config, name) == SHAPES[name], name


def test_every_layer_matches(tmp_path):
    """transformers' hidden_states are the embeddings, then each layer's output, the last one
    after final_norm (its last_hidden_state); ours are the layers' outputs before it."""
    hf_model = random_hf_model("base", "mean")
    hf_model.save_pretrained(tmp_path)
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    batch = random_batch("base")
    hf_parity.assert_every_layer_matches(
        model, params, hf_model, batch, 5, "modernbert", final_norm=True
    )


def test_bfloat16_is_finite_and_close_to_float32(tmp_path):
    random_hf_model("masked_lm", "mean").save_pretrained(tmp_path)
    hf_parity.assert_bfloat16_close(tmp_path, random_batch("masked_lm"), "modernbert")


def test_older_config_keys_are_read(tmp_path):
    """Hub configs from before transformers 5 spell the layer pattern and the thetas as
    global_attn_every_n_layers and {global,local}_rope_theta, without layer_types and
    rope_parameters."""
    hf_model = random_hf_model("base", global_attn_every_n_layers=2)
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["layer_types"], config["rope_parameters"]
    config |= {"global_rope_theta": 1000.0, "local_rope_theta": 50.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model, params = jaxformer.from_pretrained(tmp_path, task="base")
    c = model.config
    assert c.layer_types == tuple(hf_model.config.layer_types)
    assert (c.rotary.global_theta, c.rotary.local_theta) == (1000.0, 50.0)
    batch = random_batch("base")
    mine, reference = (
        hf_parity.ours(model, params, batch),
        hf_parity.theirs(hf_model, "base", batch),
    )
    assert hf_parity.max_diff("base", mine, reference, batch) < hf_parity.TOL


@pytest.mark.parametrize(
    "change, match",
    [
        ({"layer_types": ["sliding_attention"] * 4}, "layer_types=.* is not supported"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}},
            r"rope_parameters\['full_attention'\]=.* is not supported",
        ),
        ({"classifier_pooling": "max"}, "classifier_pooling='max' is not valid"),
        ({"norm_bias": 1}, "norm_bias=1 is not valid; it must be true or false"),
    ],
)
def test_unsupported_config_is_refused(tmp_path, change, match):
    random_hf_model("base").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(ValueError, match=match):
        jaxformer.from_pretrained(tmp_path, task="base")
