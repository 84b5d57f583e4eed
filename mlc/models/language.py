"""An LSTM language model: token ids in, next-token logits at every position out."""
from __future__ import annotations

import numpy as np

from ..nn import LSTM, Embedding, Linear
from .base import Model, embedding_names, linear_names


class LSTMLanguageModel(Model):
    """Embedding (``vocab`` x ``hidden``) -> ``layers``-layer LSTM (batch first) ->
    Linear(hidden, vocab). Input: token ids [batch, time] (integers); output: logits
    [batch, time, vocab], position t predicting token t + 1.

    PyTorch names: embedding.weight, lstm.{weight,bias}_{ih,hh}_l{k} (torch.nn.LSTM's
    own, batch_first=True), decoder.{weight,bias}."""

    def __init__(self, vocab: int, hidden: int, layers: int = 1):
        self.vocab, self.hidden, self.layers = int(vocab), int(hidden), int(layers)
        self._embedding = Embedding(self.vocab, self.hidden)
        self._lstm = LSTM(self.hidden, self.hidden, num_layers=self.layers, batch_first=True)
        self._decoder = Linear(self.hidden, self.vocab)

    def init_with(self, rng):
        table = {"table": (rng.uniform(-0.1, 0.1, (self.vocab, self.hidden))).astype(np.float32)}
        return {"embedding": table, "lstm": self._lstm.init_with(rng)[0],
                "decoder": self._decoder.init_with(rng)[0]}, {}

    def apply(self, params, state, ids, train: bool = False, seed=None):
        if np.dtype(ids.dtype).kind not in "iu" or len(ids.shape) != 2:
            raise TypeError(f"lstm_lm: ids must be integer token ids [batch, time], got {np.dtype(ids.dtype)}"
                            f"{list(ids.shape)}")
        x = self._embedding.forward(params["embedding"], ids)
        h, _ = self._lstm.forward(params["lstm"], x)
        return self._decoder.forward(params["decoder"], h), state

    def torch_names(self):
        yield from embedding_names("embedding", ("embedding",))
        for _, _, names in self._lstm.param_names():
            for name in names.values():
                yield f"lstm.{name}", "params", ("lstm", name), False
        yield from linear_names("decoder", ("decoder",))

    def __repr__(self) -> str:
        return f"LSTMLanguageModel(vocab={self.vocab}, hidden={self.hidden}, layers={self.layers})"


def lstm_lm(vocab: int, hidden: int, layers: int = 1) -> LSTMLanguageModel:
    """An LSTM language model (see ``LSTMLanguageModel``)."""
    return LSTMLanguageModel(vocab, hidden, layers)
