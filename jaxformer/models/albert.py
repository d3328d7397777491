"""ALBERT (Lan et al. 2020): BERT's encoder on embeddings embedding_size wide, always projected to
hidden_size, with its layers' parameters shared: num_hidden_layers layers fall into
num_hidden_groups consecutive runs, and each layer of a run applies that run's group of
inner_group_num layers. BERT's heads.

Mirrors transformers/models/albert/modeling_albert.py: layer i applies group
int(i / (num_hidden_layers / num_hidden_groups)) (AlbertTransformer); AlbertLayer adds its
feed-forward output undropped; the heads are BERT's (classifier_dropout_prob is our
classifier_dropout), the masked-LM head's transform mapping to embedding_size. Parameters sit
under `albert`; group g's layer j under `group_{g}_layer_{j}`, one copy however many layers use
it.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from jaxformer.models import heads
from jaxformer.models.bert import BertModel
from jaxformer.models.config import LayerSharing


class AlbertModel(BertModel):
    layer_options: ClassVar[dict] = {"mlp_output_dropout": False}

    def layer_scopes(self) -> list[str]:
        c = self.config
        sharing = c.sharing or LayerSharing()
        per_group = c.num_hidden_layers / sharing.num_hidden_groups  # a float, as transformers's
        return [
            f"group_{int(i / per_group)}_layer_{j}"
            for i in range(c.num_hidden_layers)
            for j in range(sharing.inner_group_num)
        ]

    def projects_embeddings(self) -> bool:  # embedding_hidden_mapping_in, even at equal widths
        return True


class _Albert:
    encoder: ClassVar[type[nn.Module]] = AlbertModel
    prefix: ClassVar[str] = "albert"


class AlbertForSequenceClassification(_Albert, heads.BertForSequenceClassification):
    pass


class AlbertForTokenClassification(_Albert, heads.BertForTokenClassification):
    pass


class AlbertForQuestionAnswering(_Albert, heads.BertForQuestionAnswering):
    pass


class AlbertForMultipleChoice(_Albert, heads.BertForMultipleChoice):
    pass


class AlbertForMaskedLM(_Albert, heads.BertForMaskedLM):
    pass
