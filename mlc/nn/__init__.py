"""Layers, losses and initializers written on traced ops (``mlc.nn``).

Parameters are plain pytrees of numpy arrays; layers hold only configuration.
See ``layers.py`` for the protocol (``init``/``apply``).
"""
from ..frontend.api import OP_FUNCTIONS as _OPS
from . import init
from .layers import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Embedding, Flatten, GELU, LayerNorm, LeakyReLU,
                     Linear, MaxPool2d, Module, MultiHeadAttention, ReLU, Sequential, Sigmoid, Tanh)
from .recurrent import GRU, LSTM, RNN
from .losses import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse, one_hot

# the activations as functions: mlc.nn.relu(x), ...
relu, gelu, tanh, sigmoid, softmax, log_softmax = (_OPS[n] for n in ("relu", "gelu", "tanh", "sigmoid", "softmax",
                                                                     "log_softmax"))
leaky_relu, elu, softplus = _OPS["leaky_relu"], _OPS["elu"], _OPS["softplus"]

__all__ = ["init", "Module", "Linear", "Conv2d", "BatchNorm2d", "LayerNorm", "Dropout", "Embedding",
           "MultiHeadAttention", "RNN", "GRU", "LSTM", "Sequential", "ReLU", "GELU", "Tanh", "Sigmoid", "LeakyReLU", "Flatten", "MaxPool2d",
           "AvgPool2d", "cross_entropy", "mse", "binary_cross_entropy", "binary_cross_entropy_with_logits", "one_hot",
           "relu", "gelu", "tanh", "sigmoid", "softmax", "log_softmax", "leaky_relu", "elu", "softplus"]
