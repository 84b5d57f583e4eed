"""BERT: a post-LayerNorm transformer encoder over token ids, with the parameter
names of Hugging Face's BertModel for loading its checkpoints."""
from __future__ import annotations

import numpy as np

from ..frontend.trace import apply as op
from ..nn import Dropout, Embedding, LayerNorm, Linear, MultiHeadAttention
from .base import Model, embedding_names, layer_norm_names, linear_names


class Bert(Model):
    """Input token ids [batch, seq] (int32 or int64, seq <= max_positions). Embeddings:
    token + position + token type 0, then LayerNorm. Each of ``layers`` encoder
    layers: x = LN(x + Attention(x)); x = LN(x + W2 gelu(W1 x)) with W1 hidden ->
    4*hidden (erf GELU, as BERT). Output: the hidden states [batch, seq, hidden]; with
    ``num_classes``, logits [batch, num_classes] of the first ([CLS]) token, through
    BERT's pooler (dense + tanh) and a classifier. No attention mask: every token
    attends to all. ``dropout`` applies in training only (and then needs a seed).

    params_from_state_dict takes Hugging Face's BertModel / BertForSequenceClassification
    names (embeddings.word_embeddings.weight, encoder.layer.0.attention.self.query.weight,
    ..., pooler.dense.weight, classifier.weight; a "bert." prefix is dropped)."""

    def __init__(self, layers: int, hidden: int, heads: int, vocab: int, num_classes: int | None = None,
                 max_positions: int = 512, type_vocab: int = 2, eps: float = 1e-12, dropout: float = 0.0):
        if hidden % heads:
            raise ValueError(f"bert: hidden {hidden} must divide by heads {heads}")
        self.layers, self.hidden, self.heads, self.vocab = layers, hidden, heads, vocab
        self.num_classes, self.max_positions, self.type_vocab, self.eps = num_classes, max_positions, type_vocab, eps
        self.dropout = dropout
        self._word, self._pos = Embedding(vocab, hidden), Embedding(max_positions, hidden)
        self._type = Embedding(type_vocab, hidden)
        self._norm = LayerNorm(hidden, eps)
        self._attn = MultiHeadAttention(hidden, heads)
        self._fc1, self._fc2 = Linear(hidden, 4 * hidden), Linear(4 * hidden, hidden)
        self._pooler = Linear(hidden, hidden)
        self._classifier = Linear(hidden, num_classes) if num_classes else None
        # one stream per dropout site, so no two draw the same mask
        self._drops = [Dropout(dropout) for _ in range(2 * layers + 2)]

    def init_with(self, rng):
        def normal(shape):   # BERT's initialization: N(0, 0.02) weights, zero biases
            return (rng.standard_normal(shape) * 0.02).astype(np.float32)

        def linear(n_in, n_out):
            return {"w": normal((n_in, n_out)), "b": np.zeros(n_out, np.float32)}

        h = self.hidden
        norm = self._norm.init_with(rng)[0]
        params = {"embeddings": {"word": {"table": normal((self.vocab, h))},
                                 "position": {"table": normal((self.max_positions, h))},
                                 "token_type": {"table": normal((self.type_vocab, h))},
                                 "norm": dict(norm)},
                  "layers": []}
        for _ in range(self.layers):
            attn = {}
            for n in "qkvo":
                attn["w" + n], attn["b" + n] = normal((h, h)), np.zeros(h, np.float32)
            params["layers"].append({"attention": attn, "attention_norm": {k: v.copy() for k, v in norm.items()},
                                     "fc1": linear(h, 4 * h), "fc2": linear(4 * h, h),
                                     "output_norm": {k: v.copy() for k, v in norm.items()}})
        if self.num_classes:
            params["pooler"] = linear(h, h)
            params["classifier"] = linear(h, self.num_classes)
        return params, {}

    def apply(self, params, state, ids, train: bool = False, seed=None):
        if len(ids.shape) != 2 or np.dtype(ids.dtype).kind not in "iu":
            raise ValueError(f"bert: expected integer token ids [batch, seq], got {ids.dtype} {tuple(ids.shape)}")
        t = ids.shape[1]
        if t > self.max_positions:
            raise ValueError(f"bert: sequence of {t} tokens, more than max_positions={self.max_positions}")
        e = params["embeddings"]
        x = self._word.forward(e["word"], ids) + self._pos.forward(e["position"], np.arange(t, dtype=np.int64))
        x = self._norm.forward(e["norm"], x + e["token_type"]["table"][0])   # every token is of type 0

        def drop(y, site):
            return self._drops[site].apply({}, {}, y, train=train, seed=seed)[0]

        x = drop(x, 0)
        for i, p in enumerate(params["layers"]):
            x = self._norm.forward(p["attention_norm"], x + drop(self._attn.forward(p["attention"], x), 2 * i + 1))
            ffn = self._fc2.forward(p["fc2"], op("gelu", self._fc1.forward(p["fc1"], x)))
            x = self._norm.forward(p["output_norm"], x + drop(ffn, 2 * i + 2))
        if not self.num_classes:
            return x, state
        pooled = op("tanh", self._pooler.forward(params["pooler"], x[:, 0]))
        return self._classifier.forward(params["classifier"], drop(pooled, -1)), state

    def torch_names(self):
        yield from embedding_names("embeddings.word_embeddings", ("embeddings", "word"))
        yield from embedding_names("embeddings.position_embeddings", ("embeddings", "position"))
        yield from embedding_names("embeddings.token_type_embeddings", ("embeddings", "token_type"))
        yield from layer_norm_names("embeddings.LayerNorm", ("embeddings", "norm"))
        for i in range(self.layers):
            pre, path = f"encoder.layer.{i}", ("layers", i)
            for n, torch_n in zip("qkv", ("query", "key", "value")):
                yield f"{pre}.attention.self.{torch_n}.weight", "params", path + ("attention", "w" + n), True
                yield f"{pre}.attention.self.{torch_n}.bias", "params", path + ("attention", "b" + n), False
            yield f"{pre}.attention.output.dense.weight", "params", path + ("attention", "wo"), True
            yield f"{pre}.attention.output.dense.bias", "params", path + ("attention", "bo"), False
            yield from layer_norm_names(f"{pre}.attention.output.LayerNorm", path + ("attention_norm",))
            yield from linear_names(f"{pre}.intermediate.dense", path + ("fc1",))
            yield from linear_names(f"{pre}.output.dense", path + ("fc2",))
            yield from layer_norm_names(f"{pre}.output.LayerNorm", path + ("output_norm",))
        if self.num_classes:
            yield from linear_names("pooler.dense", ("pooler",))
            yield from linear_names("classifier", ("classifier",))

    # position_ids / token_type_ids are buffers, not parameters; a BertModel's pooler is
    # unused without a classifier
    ignored_torch_names = ("embeddings.position_ids", "embeddings.token_type_ids")
    torch_prefixes = ("bert.",)

    def params_from_state_dict(self, state_dict):
        sd = dict(state_dict)
        if not self.num_classes:
            sd = {k: v for k, v in sd.items() if not k.removeprefix("bert.").startswith("pooler.")}
        return super().params_from_state_dict(sd)

    def __repr__(self) -> str:
        return (f"Bert(layers={self.layers}, hidden={self.hidden}, heads={self.heads}, vocab={self.vocab}, "
                f"num_classes={self.num_classes})")


def bert(layers: int, hidden: int, heads: int, vocab: int, num_classes: int | None = None, **options) -> Bert:
    """A BERT encoder (see ``Bert``; options: max_positions=512, type_vocab=2, eps=1e-12, dropout=0.0)."""
    return Bert(layers, hidden, heads, vocab, num_classes, **options)


def bert_base(num_classes: int | None = None, **options) -> Bert:
    """BERT-base: 12 layers, hidden 768, 12 heads, the 30522-token uncased vocabulary (110M parameters)."""
    return Bert(12, 768, 12, 30522, num_classes, **options)
