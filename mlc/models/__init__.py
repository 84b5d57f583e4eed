"""The model zoo: common architectures as ``mlc.nn`` modules.

    model = mlc.models.resnet18(num_classes=10)
    params, state = model.init(seed=0)
    logits = model(params, images, state=state)            # BatchNorm models take their state
    params, state = model.params_from_state_dict(torch_model.state_dict())

Every model has ``init(seed)``, ``apply(params, state, *inputs, train=..., seed=...)``,
``model(params, *inputs)`` for inference, and ``params_from_state_dict`` to load the
weights of the equivalent PyTorch module (torchvision's names for the ResNets,
Hugging Face's for BERT).
"""
from .base import Model
from .bert import Bert, bert, bert_base
from .language import LSTMLanguageModel, lstm_lm
from .recommend import NCF, WideDeep, ncf, wide_deep
from .resnet import ResNet, resnet18, resnet50

__all__ = ["Model", "ResNet", "resnet18", "resnet50", "Bert", "bert", "bert_base", "WideDeep", "wide_deep", "NCF",
           "ncf", "LSTMLanguageModel", "lstm_lm"]
