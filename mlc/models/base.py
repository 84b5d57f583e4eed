"""What every model of the zoo shares: the ``mlc.nn`` module protocol for several
inputs, and loading a PyTorch state dict into mlc's parameters."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..nn import Module


def to_numpy(value, name: str) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor (moved to the host and
    detached; bfloat16 widened to float32, which numpy lacks)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):   # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(f"state dict entry {name!r} is a {type(value).__name__}, not an array or a tensor")
    return np.asarray(value)


class Model(Module):
    """An ``mlc.nn`` module with any number of inputs:

        params, state = model.init(seed=0)
        y = model(params, *inputs)                       # inference (state=... for BatchNorm models)
        y, state = model.apply(params, state, *inputs, train=True, seed=step_seed)
        params, state = model.params_from_state_dict(torch_model.state_dict())

    Subclasses define ``init_with``, ``apply`` and ``torch_names``."""

    has_state = False   # True where apply keeps running statistics (BatchNorm)

    def apply(self, params, state, *inputs, train: bool = False, seed=None):
        raise NotImplementedError(f"{type(self).__name__} must define apply")

    def __call__(self, params, *inputs, state=None):
        """Inference. Models with BatchNorm need their running statistics: ``state=``."""
        if state is None:
            if self.has_state:
                raise TypeError(f"{type(self).__name__} keeps BatchNorm running statistics: call "
                                "model(params, *inputs, state=state) or model.apply(params, state, *inputs)")
            state = {}
        return self.apply(params, state, *inputs)[0]

    def torch_names(self) -> Iterator[tuple[str, str, tuple, bool]]:
        """(PyTorch name, "params" or "state", path in that tree, transpose) for each
        entry of the equivalent PyTorch module's state dict."""
        raise NotImplementedError(f"{type(self).__name__} does not map PyTorch state dicts")

    # entries of a PyTorch state dict that hold no parameter of the model
    ignored_torch_names: tuple[str, ...] = ()
    # a prefix wrappers put before every name ("bert." in Hugging Face's task models)
    torch_prefixes: tuple[str, ...] = ()

    def params_from_state_dict(self, state_dict) -> tuple:
        """(params, state) from the state dict of the equivalent PyTorch module (numpy
        arrays or torch tensors): Linear weights transposed to mlc's [in, out],
        BatchNorm's running statistics into the state. Every parameter must be present
        with its shape; an entry the model has no place for is an error."""
        params, state = self.init(seed=0)   # the structure, shapes and dtypes to fill
        trees = {"params": params, "state": state}
        entries = {}
        for k, v in dict(state_dict).items():
            for prefix in self.torch_prefixes:
                if k.startswith(prefix):
                    k = k[len(prefix):]
                    break
            entries[k] = v
        missing = []
        for tname, which, path, transpose in self.torch_names():
            if tname not in entries:
                missing.append(tname)
                continue
            a = to_numpy(entries.pop(tname), tname)
            parent = trees[which]
            for key in path[:-1]:
                parent = parent[key]
            want = parent[path[-1]]
            want_shape = want.T.shape if transpose else want.shape
            if a.shape != want_shape:
                raise ValueError(f"{type(self).__name__}.params_from_state_dict: {tname!r} has shape {list(a.shape)}, "
                                 f"expected {list(want_shape)}")
            parent[path[-1]] = np.ascontiguousarray(a.T if transpose else a, dtype=want.dtype)
        if missing:
            raise KeyError(f"{type(self).__name__}.params_from_state_dict: the state dict lacks "
                           f"{', '.join(map(repr, missing[:8]))}{' ...' if len(missing) > 8 else ''}")
        extra = [k for k in entries if not any(k == i or k.endswith("." + i) for i in self.ignored_torch_names)]
        if extra:
            raise KeyError(f"{type(self).__name__}.params_from_state_dict: unexpected entries "
                           f"{', '.join(map(repr, extra[:8]))}{' ...' if len(extra) > 8 else ''} "
                           "(a different architecture or configuration?)")
        return params, state


def linear_names(torch_name: str, path: tuple, bias: bool = True):
    """A torch.nn.Linear (weight [out, in]) onto an mlc Linear ({"w": [in, out], "b"})."""
    yield f"{torch_name}.weight", "params", path + ("w",), True
    if bias:
        yield f"{torch_name}.bias", "params", path + ("b",), False


def conv_names(torch_name: str, path: tuple, bias: bool = False):
    """A torch.nn.Conv2d onto an mlc Conv2d: the same [out, in / groups, kh, kw] layout."""
    yield f"{torch_name}.weight", "params", path + ("w",), False
    if bias:
        yield f"{torch_name}.bias", "params", path + ("b",), False


def embedding_names(torch_name: str, path: tuple):
    yield f"{torch_name}.weight", "params", path + ("table",), False


def layer_norm_names(torch_name: str, path: tuple):
    yield f"{torch_name}.weight", "params", path + ("scale",), False
    yield f"{torch_name}.bias", "params", path + ("bias",), False


def batch_norm_names(torch_name: str, path: tuple):
    """A torch.nn.BatchNorm2d: its affine parameters into params, running statistics into state
    (num_batches_tracked is ignored: mlc's BatchNorm uses a fixed momentum)."""
    yield f"{torch_name}.weight", "params", path + ("scale",), False
    yield f"{torch_name}.bias", "params", path + ("bias",), False
    yield f"{torch_name}.running_mean", "state", path + ("mean",), False
    yield f"{torch_name}.running_var", "state", path + ("var",), False
