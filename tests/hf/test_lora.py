"""LoRA adapters (jaxformer.lora) against Hugging Face PEFT: a fresh adapter changes nothing;
an adapter written by `save_pretrained` loads in `peft.PeftModel.from_pretrained` with the same
outputs, for every family's classification and token-classification heads, and one PEFT writes
loads in `jaxformer.from_pretrained` with PEFT's outputs; `merge` gives the plain model with the
adapted outputs; bad configs are refused."""

import json
import shutil

import hf_parity
import jax
import numpy as np
import pytest
import test_families_camembert as camembert
import test_families_deberta as deberta_v2
import test_families_deberta_v1 as deberta
import test_families_electra_albert as electra_albert
import test_families_modernbert as modernbert
import test_families_mpnet as mpnet
from flax import traverse_util
from test_families import DISTILBERT_SHAPES, ROBERTA_SHAPES

import jaxformer
from jaxformer import families, lora
from jaxformer.hf import CheckpointError
from jaxformer.hf.hub import load_config

peft = pytest.importorskip("peft")
torch = hf_parity.torch

BERT = dict(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=50,
    max_position_embeddings=40,
)
ROBERTA = BERT | dict(type_vocab_size=1, pad_token_id=1)
DEBERTA_V2 = BERT | dict(
    relative_attention=True,
    position_buckets=8,
    max_relative_positions=16,
    pos_att_type=["p2c", "c2p"],
)
# name: (transformers stem, fields, targets)
FAMILIES = {
    "bert": ("Bert", BERT, ("query", "key", "value", "output.dense", "intermediate.dense")),
    "roberta": ("Roberta", ROBERTA, None),
    "deberta-v2": ("DebertaV2", DEBERTA_V2, None),
}

# Every registered family, with the odd shapes of its own parity tests: (transformers stem,
# fields). ModernBERT runs transformers' sdpa attention, as its parity tests do.
EVERY_FAMILY = {
    "bert": ("Bert", BERT),
    "roberta": ("Roberta", ROBERTA_SHAPES),
    "xlm-roberta": ("XLMRoberta", ROBERTA_SHAPES),
    "camembert": ("Camembert", camembert.SHAPES),
    "distilbert": ("DistilBert", DISTILBERT_SHAPES),
    "electra": ("Electra", electra_albert.ELECTRA_SHAPES),
    "albert": electra_albert.FAMILIES["albert"],  # one group of two layers: shared weights
    "modernbert": ("ModernBert", modernbert.SHAPES | modernbert.VARIANTS["mean"]),
    "deberta": ("Deberta", deberta.CONFIGS["both"]),
    "deberta-v2": ("DebertaV2", deberta_v2.CONFIGS["v3"]),
    "mpnet": ("MPNet", mpnet.SHAPES),
}


def base_folder(family, task, tmp_path):
    stem, fields, _ = FAMILIES[family]
    hf = hf_parity.random_hf_model(stem, fields, task, seed=3)
    hf.save_pretrained(tmp_path / "base")
    return hf, tmp_path / "base"


def batch_of(family, task):
    pad = FAMILIES[family][1].get("pad_token_id", 0)
    return hf_parity.random_batch(task, pad=pad, low=pad + 2)


def perturbed(params, seed=1):
    """`params` with every adapter's B (zero when fresh) random, so the adapters matter."""
    flat = traverse_util.flatten_dict(params["lora"])
    rng = np.random.default_rng(seed)
    flat = {
        k: (0.2 * rng.standard_normal(v.shape)).astype(np.float32) if k[-1] == "b" else v
        for k, v in flat.items()
    }
    return {"base": params["base"], "lora": traverse_util.unflatten_dict(flat)}


def perturbed_head(model, params, seed=2):
    """`params` with the task head (what trains with the adapters) moved off the base
    checkpoint's, so the adapter folder must carry it."""
    rng = np.random.default_rng(seed)
    mask = traverse_util.flatten_dict(lora.trainable(model, params))
    flat = {
        k: v + (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
        if mask[k] and k[0] == "base"
        else v
        for k, v in traverse_util.flatten_dict(params).items()
    }
    return traverse_util.unflatten_dict(flat)


def outputs(model, params, batch):
    return hf_parity.ours(model, params, batch)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fresh_adapters_change_nothing_and_save_for_peft(family, tmp_path):
    task = "classification"
    hf, folder = base_folder(family, task, tmp_path)
    batch = batch_of(family, task)
    config = jaxformer.LoraConfig(rank=4, alpha=8, targets=FAMILIES[family][2])
    model, params = jaxformer.from_pretrained(folder, task=task, num_labels=5, lora=config)
    plain, base = jaxformer.from_pretrained(folder, task=task, num_labels=5)
    np.testing.assert_array_equal(
        outputs(model, params, batch)["logits"], outputs(plain, base, batch)["logits"]
    )
    a = traverse_util.flatten_dict(params["lora"])
    assert a and all(v.shape[0] == 4 for k, v in a.items() if k[-1] == "a")
    bound = 1 / np.sqrt(hf.config.hidden_size)
    assert all(np.abs(v).max() <= bound for k, v in a.items() if k[-1] == "a")

    params = perturbed(params)
    ours = outputs(model, params, batch)
    assert hf_parity.max_diff(task, ours, hf_parity.theirs(hf, task, batch), batch) > 1e-3
    jaxformer.save_pretrained(model, params, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 4 and saved["lora_alpha"] == 8
    assert saved["task_type"] == "SEQ_CLS" and saved["base_model_name_or_path"] == str(folder)
    with torch.no_grad():
        again = hf_parity.random_hf_model(FAMILIES[family][0], FAMILIES[family][1], task, seed=3)
        peft_model = peft.PeftModel.from_pretrained(again, tmp_path / "adapter").eval()
    diff = hf_parity.max_diff(task, ours, hf_parity.theirs(peft_model, task, batch), batch)
    print(f"{family}: ours -> PEFT {diff:.2e}")
    assert diff < hf_parity.TOL

    # The folder reads back (base from base_model_name_or_path) to the same model.
    back, back_params = jaxformer.from_pretrained(tmp_path / "adapter", task=task)
    assert back.lora.rank == 4
    assert lora.targets(back.model, back.lora) == lora.targets(model.model, config)
    np.testing.assert_allclose(
        outputs(back, back_params, batch)["logits"], ours["logits"], atol=1e-6
    )

    # merge: a plain model with the adapted outputs, saved as an ordinary checkpoint.
    merged_model, merged = lora.merge(model, params)
    np.testing.assert_allclose(
        outputs(merged_model, merged, batch)["logits"], ours["logits"], atol=1e-5
    )
    jaxformer.save_pretrained(merged_model, merged, tmp_path / "merged")
    reloaded, reloaded_params = jaxformer.from_pretrained(tmp_path / "merged", task=task)
    np.testing.assert_allclose(
        outputs(reloaded, reloaded_params, batch)["logits"], ours["logits"], atol=1e-5
    )


@pytest.mark.parametrize("task", ["classification", "token_classification"])
@pytest.mark.parametrize("family", list(EVERY_FAMILY))
def test_every_family_saves_for_peft(family, task, tmp_path):
    """The family's default targets, adapters and head non-zero: PeftModel on transformers'
    Auto model of the base checkpoint gives our logits."""
    assert set(EVERY_FAMILY) == set(families.FAMILIES)
    stem, fields = EVERY_FAMILY[family]
    attention = "sdpa" if family == "modernbert" else "eager"
    hf = hf_parity.random_hf_model(stem, fields, task, seed=3, attention=attention)
    hf.save_pretrained(tmp_path / "base")
    batch = hf_parity.random_batch(task, pad=fields.get("pad_token_id", 0), low=3)
    config = jaxformer.LoraConfig(rank=4, alpha=8)
    model, params = jaxformer.from_pretrained(tmp_path / "base", task=task, lora=config)
    assert model.lora.targets is None  # the family's default
    params = perturbed_head(model, perturbed(params))
    ours = outputs(model, params, batch)
    assert hf_parity.max_diff(task, ours, hf_parity.theirs(hf, task, batch), batch) > 1e-2
    jaxformer.save_pretrained(model, params, tmp_path / "adapter")
    auto = getattr(hf_parity.transformers, hf_parity.HEADS[task][1])
    base = auto.from_pretrained(tmp_path / "base", attn_implementation=attention)
    peft_model = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    diff = hf_parity.max_diff(task, ours, hf_parity.theirs(peft_model, task, batch), batch)
    print(f"{family} {task}: ours -> PEFT {diff:.2e}")
    assert diff < hf_parity.TOL

    # merge=True: the plain model, adapters folded in, an ordinary checkpoint transformers loads.
    jaxformer.save_pretrained(model, params, tmp_path / "merged", merge=True)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged, info = auto.from_pretrained(
        tmp_path / "merged", output_loading_info=True, attn_implementation=attention
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    diff = hf_parity.max_diff(task, ours, hf_parity.theirs(merged.eval(), task, batch), batch)
    print(f"{family} {task}: ours -> merged {diff:.2e}")
    assert diff < hf_parity.TOL


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("task", ["classification", "token_classification", "base"])
def test_reads_peft_folder(family, task, tmp_path):
    stem, fields, targets = FAMILIES[family]
    hf, folder = base_folder(family, task, tmp_path)
    task_type = {"classification": "SEQ_CLS", "token_classification": "TOKEN_CLS"}.get(
        task, "FEATURE_EXTRACTION"
    )
    config = peft.LoraConfig(
        r=3,
        lora_alpha=7,
        target_modules=list(targets or ["query", "value"]),
        task_type=task_type,
        init_lora_weights=False,  # random B: the adapters matter
    )
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(hf, config)
    peft_model.base_model.model.config.name_or_path = str(folder)
    peft_model.save_pretrained(tmp_path / "adapter")
    raw = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    raw["base_model_name_or_path"] = str(folder)
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(raw))
    batch = batch_of(family, task)
    model, params = jaxformer.from_pretrained(tmp_path / "adapter", task=task)
    assert isinstance(model, lora.LoraModel) and model.lora.rank == 3
    peft_model.eval()
    diff = hf_parity.max_diff(
        task, outputs(model, params, batch), hf_parity.theirs(peft_model, task, batch), batch
    )
    print(f"{family} {task}: PEFT -> ours {diff:.2e}")
    assert diff < hf_parity.TOL


def peft_folder(family, task, targets, out, seed=3, **changes):
    """(transformers base folder, PEFT's model, its adapter folder): a random base model of
    EVERY_FAMILY[family] (and `changes`) and a PEFT LoRA on `targets`, r=3, B random."""
    stem, fields = EVERY_FAMILY[family]
    attention = "sdpa" if family == "modernbert" else "eager"
    hf = hf_parity.random_hf_model(stem, fields | changes, task, seed=seed, attention=attention)
    hf.save_pretrained(out / "base")
    task_type = {"classification": "SEQ_CLS", "token_classification": "TOKEN_CLS"}[task]
    config = peft.LoraConfig(
        r=3, lora_alpha=5, target_modules=targets, task_type=task_type, init_lora_weights=False
    )
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(hf, config)
    peft_model.save_pretrained(out / "adapter")
    return out / "base", peft_model.eval(), out / "adapter"


@pytest.mark.parametrize(
    "family, targets",
    [
        ("bert", "all-linear"),  # the pooler too
        ("electra", "all-linear"),  # the classifier's modules named, not adapted: saved whole
        ("deberta-v2", "all-linear"),  # the pooler, part of our head: folded into it
        ("modernbert", r".*\.(Wqkv|Wo)"),  # a regular expression
    ],
)
def test_adapter_onto_base(family, targets, tmp_path):
    """from_pretrained(base, adapter=folder): PEFT's folder, whatever its targets, on the base
    checkpoint gives PEFT's logits; saved again, PEFT reads it back the same."""
    task = "classification"
    base, peft_model, folder = peft_folder(family, task, targets, tmp_path)
    batch = hf_parity.random_batch(task, pad=EVERY_FAMILY[family][1].get("pad_token_id", 0), low=3)
    model, params = jaxformer.from_pretrained(base, task=task, adapter=folder)
    assert isinstance(model, lora.LoraModel) and model.lora.rank == 3
    assert model.base_model == str(base)
    ours = outputs(model, params, batch)
    diff = hf_parity.max_diff(task, ours, hf_parity.theirs(peft_model, task, batch), batch)
    print(f"{family} {targets}: PEFT -> ours {diff:.2e}")
    assert diff < hf_parity.TOL
    jaxformer.save_pretrained(model, params, tmp_path / "again")
    auto = getattr(hf_parity.transformers, hf_parity.HEADS[task][1])
    attention = "sdpa" if family == "modernbert" else "eager"
    again = auto.from_pretrained(base, attn_implementation=attention)
    again = peft.PeftModel.from_pretrained(again, tmp_path / "again").eval()
    assert hf_parity.max_diff(task, ours, hf_parity.theirs(again, task, batch), batch) < 1e-4


def edited(folder, out, **fields):
    """A copy of the adapter `folder` with adapter_config.json's `fields` changed."""
    shutil.copytree(folder, out)
    raw = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps(raw | fields))
    return out


def test_adapter_refusals(tmp_path):
    """Each a one-line error naming the file and what in it does not fit."""
    task = "classification"
    base, _, folder = peft_folder("bert", task, ["query", "value"], tmp_path / "bert")
    config = r"adapter_config\.json"
    weights = r"adapter_model\.safetensors"

    ia3 = edited(folder, tmp_path / "ia3", peft_type="IA3")
    with pytest.raises(ValueError, match=f"{config}: peft_type='IA3'"):
        jaxformer.from_pretrained(base, task=task, adapter=ia3)
    rank = edited(folder, tmp_path / "rank", r=5)
    with pytest.raises(CheckpointError, match=f"{weights} has shape .*rank 3, not {config}'s r=5"):
        jaxformer.from_pretrained(base, task=task, adapter=rank)
    with pytest.raises(ValueError, match=f"{config}: r=0"):
        jaxformer.from_pretrained(base, task=task, adapter=edited(folder, tmp_path / "r0", r=0))

    # Another architecture: by its tensors' names, and by the base its config names.
    _, other = base_folder("roberta", task, tmp_path / "roberta")
    with pytest.raises(CheckpointError, match=f"{weights}: .*bert.encoder.*another architecture"):
        jaxformer.from_pretrained(other, task=task, adapter=folder)
    named = edited(folder, tmp_path / "named", base_model_name_or_path=str(other))
    with pytest.raises(ValueError, match=f"{config}: base_model_name_or_path=.* model_type"):
        jaxformer.from_pretrained(base, task=task, adapter=named)
    # Another width: same names, other shapes.
    wide, _, _ = peft_folder("bert", task, ["query"], tmp_path / "wide", hidden_size=48)
    with pytest.raises(CheckpointError, match=f"{weights} has shape .*another width"):
        jaxformer.from_pretrained(wide, task=task, adapter=folder)

    with pytest.raises(ValueError, match="adapter=.*base checkpoint"):
        jaxformer.from_pretrained(folder, task=task, adapter=folder)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        jaxformer.from_pretrained(base, task=task, adapter=base)


@pytest.mark.parametrize("model_type", list(families.FAMILIES))
def test_every_family_default_targets_resolve(model_type, tmp_path):
    sizes = dict(hidden_size=12, num_hidden_layers=2, num_attention_heads=2, vocab_size=50)
    hf_parity.transformers.AutoConfig.for_model(model_type, **sizes).save_pretrained(tmp_path)
    model = families.model_class(model_type, "classification")(load_config(tmp_path))
    found = lora.targets(model, jaxformer.LoraConfig())
    assert found and all(".0." in m or ".1." in m for m in found), found


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="rank"):
        jaxformer.LoraConfig(rank=0)
    with pytest.raises(ValueError, match="alpha"):
        jaxformer.LoraConfig(alpha=-1)
    with pytest.raises(ValueError, match="dropout"):
        jaxformer.LoraConfig(dropout=1.5)
    _, folder = base_folder("bert", "classification", tmp_path)
    plain, plain_params = jaxformer.from_pretrained(folder)
    with pytest.raises(ValueError, match="no LoRA adapters to merge"):
        jaxformer.save_pretrained(plain, plain_params, tmp_path / "out", merge=True)
    with pytest.raises(ValueError, match=r"\['nope'\].*attention.self.query"):
        jaxformer.from_pretrained(folder, lora=jaxformer.LoraConfig(targets=("query", "nope")))
    model, params = jaxformer.from_pretrained(folder, lora=jaxformer.LoraConfig(dropout=0.1))
    batch = batch_of("bert", "classification")
    with pytest.raises(ValueError, match="dropout=0.1"):
        model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            train=True,
            rngs={"dropout": jax.random.key(0)},
        )
