"""Recommendation models: Wide & Deep (Cheng et al. 2016) and NCF's NeuMF (He et al. 2017)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..frontend.trace import apply as op
from ..nn import Embedding, Linear
from .base import Model, embedding_names, linear_names


def _check_ids(name: str, ids, batch=None, width=None):
    if np.dtype(ids.dtype).kind not in "iu":
        raise TypeError(f"{name} must be integer ids, got {ids.dtype}")
    shape = tuple(ids.shape)
    want = (batch if batch is not None else shape[0],) + ((width,) if width is not None else ())
    if shape != want:
        raise ValueError(f"{name} has shape {shape}, expected {want}")


class _MLP:
    """Linear layers with ReLU between them and after all but the last (``relu_last``
    adds one after the last too); PyTorch's Sequential names its Linears 0, 2, 4, ..."""

    def __init__(self, sizes: Sequence[int], relu_last: bool):
        self.layers = [Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.relu_last = relu_last

    def init_with(self, rng):
        return [layer.init_with(rng)[0] for layer in self.layers]

    def forward(self, params, x):
        for i, (layer, p) in enumerate(zip(self.layers, params)):
            x = layer.forward(p, x)
            if self.relu_last or i < len(self.layers) - 1:
                x = op("relu", x)
        return x

    def torch_names(self, prefix: str, path: tuple):
        for i in range(len(self.layers)):
            yield from linear_names(f"{prefix}.{2 * i}", path + (i,))


class WideDeep(Model):
    """Wide & Deep for binary prediction (a click, a purchase). Inputs:

    - ``wide`` float32 [batch, n_wide]: the wide part's features (one-hot and crossed
      features, 0/1 or real), seen by one linear layer;
    - ``categories`` integer [batch, len(n_categories)]: one id per categorical field,
      field f's ids in [0, n_categories[f]); each field has its own embedding_dim table;
    - ``dense`` float32 [batch, n_dense]: the real-valued features.

    The deep part is an MLP (``hidden`` sizes, ReLU) over the concatenated embeddings
    and dense features. Output: the probability [batch], sigmoid(wide logit + deep logit).

    PyTorch names: wide.{weight,bias}, embeddings.{f}.weight, deep.{0,2,4,...}.{weight,bias}
    (a Sequential of Linear and ReLU ending with Linear(hidden[-1], 1))."""

    def __init__(self, n_wide: int, n_categories, n_dense: int, embedding_dim: int = 8,
                 hidden: Sequence[int] = (64, 32)):
        self.n_wide, self.n_dense, self.embedding_dim = n_wide, n_dense, embedding_dim
        self.n_categories = (int(n_categories),) if isinstance(n_categories, (int, np.integer)) \
            else tuple(int(n) for n in n_categories)
        if not self.n_categories and not n_dense:
            raise ValueError("wide_deep: the deep part needs categorical fields or dense features")
        self.hidden = tuple(hidden)
        self._wide = Linear(n_wide, 1)
        self._embeddings = [Embedding(n, embedding_dim) for n in self.n_categories]
        self._deep = _MLP((len(self.n_categories) * embedding_dim + n_dense, *self.hidden, 1), relu_last=False)

    def init_with(self, rng):
        return {"wide": self._wide.init_with(rng)[0],
                "embeddings": [e.init_with(rng)[0] for e in self._embeddings],
                "deep": self._deep.init_with(rng)}, {}

    def apply(self, params, state, wide, categories, dense, train: bool = False, seed=None):
        b = wide.shape[0]
        if tuple(wide.shape) != (b, self.n_wide):
            raise ValueError(f"wide_deep: wide has shape {tuple(wide.shape)}, expected ({b}, {self.n_wide})")
        _check_ids("wide_deep: categories", categories, b, len(self.n_categories))
        if tuple(dense.shape) != (b, self.n_dense):
            raise ValueError(f"wide_deep: dense has shape {tuple(dense.shape)}, expected ({b}, {self.n_dense})")
        parts = [e.forward(p, categories[:, f]) for f, (e, p) in enumerate(zip(self._embeddings,
                                                                              params["embeddings"]))]
        if self.n_dense:
            parts.append(dense)
        deep_in = parts[0] if len(parts) == 1 else op("concatenate", parts, axis=1)
        logit = self._wide.forward(params["wide"], wide) + self._deep.forward(params["deep"], deep_in)
        return op("sigmoid", op("reshape", logit, shape=(b,))), state

    def torch_names(self):
        yield from linear_names("wide", ("wide",))
        for f in range(len(self.n_categories)):
            yield from embedding_names(f"embeddings.{f}", ("embeddings", f))
        yield from self._deep.torch_names("deep", ("deep",))

    def __repr__(self) -> str:
        return (f"WideDeep(n_wide={self.n_wide}, n_categories={self.n_categories}, n_dense={self.n_dense}, "
                f"embedding_dim={self.embedding_dim}, hidden={self.hidden})")


def wide_deep(n_wide: int, n_categories, n_dense: int, embedding_dim: int = 8,
              hidden: Sequence[int] = (64, 32)) -> WideDeep:
    """Wide & Deep (see ``WideDeep``): ``n_categories`` is the number of ids of each
    categorical field (an int for one field)."""
    return WideDeep(n_wide, n_categories, n_dense, embedding_dim, hidden)


class NCF(Model):
    """NeuMF, NCF's model: user ids [batch] and item ids [batch] (integers) in, the
    probability of an interaction [batch] out. A GMF tower (the elementwise product of
    ``dim``-wide user and item embeddings) and an MLP tower (its own embeddings of
    mlp[0] / 2 each, concatenated, through Linear+ReLU layers of sizes ``mlp``) are
    concatenated and mapped to one logit.

    PyTorch names: gmf_user.weight, gmf_item.weight, mlp_user.weight, mlp_item.weight,
    mlp.{0,2,...}.{weight,bias} (a Sequential of Linear and ReLU), predict.{weight,bias}."""

    def __init__(self, users: int, items: int, dim: int = 32, mlp: Sequence[int] = (64, 32, 16)):
        self.users, self.items, self.dim, self.mlp = users, items, dim, tuple(mlp)
        if not self.mlp or self.mlp[0] % 2:
            raise ValueError(f"ncf: mlp sizes {self.mlp} must start with an even size (two embeddings of half)")
        half = self.mlp[0] // 2
        self._gmf_user, self._gmf_item = Embedding(users, dim), Embedding(items, dim)
        self._mlp_user, self._mlp_item = Embedding(users, half), Embedding(items, half)
        self._mlp = _MLP(self.mlp, relu_last=True)
        self._predict = Linear(dim + self.mlp[-1], 1)

    def init_with(self, rng):
        def table(shape):   # NeuMF's initialization: N(0, 0.01)
            return {"table": (rng.standard_normal(shape) * 0.01).astype(np.float32)}

        half = self.mlp[0] // 2
        return {"gmf_user": table((self.users, self.dim)), "gmf_item": table((self.items, self.dim)),
                "mlp_user": table((self.users, half)), "mlp_item": table((self.items, half)),
                "mlp": self._mlp.init_with(rng), "predict": self._predict.init_with(rng)[0]}, {}

    def apply(self, params, state, users, items, train: bool = False, seed=None):
        _check_ids("ncf: users", users)
        _check_ids("ncf: items", items, users.shape[0])
        gmf = self._gmf_user.forward(params["gmf_user"], users) * self._gmf_item.forward(params["gmf_item"], items)
        mlp_in = op("concatenate", [self._mlp_user.forward(params["mlp_user"], users),
                                    self._mlp_item.forward(params["mlp_item"], items)], axis=1)
        mlp = self._mlp.forward(params["mlp"], mlp_in)
        logit = self._predict.forward(params["predict"], op("concatenate", [gmf, mlp], axis=1))
        return op("sigmoid", op("reshape", logit, shape=(users.shape[0],))), state

    def torch_names(self):
        for name in ("gmf_user", "gmf_item", "mlp_user", "mlp_item"):
            yield from embedding_names(name, (name,))
        yield from self._mlp.torch_names("mlp", ("mlp",))
        yield from linear_names("predict", ("predict",))

    def __repr__(self) -> str:
        return f"NCF(users={self.users}, items={self.items}, dim={self.dim}, mlp={self.mlp})"


def ncf(users: int, items: int, dim: int = 32, mlp: Sequence[int] = (64, 32, 16)) -> NCF:
    """NeuMF (see ``NCF``) over ``users`` users and ``items`` items, GMF width ``dim``."""
    return NCF(users, items, dim, mlp)
