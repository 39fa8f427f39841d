"""gpuad.nn: activations, layers, losses and initialisers for neural networks.

==========================  ===================================================
:mod:`.activations`         relu, sigmoid, softplus, silu, gelu, tanh, softmax,
                            log_softmax, logsumexp (numerically stable)
:mod:`.functional`          stateless layer maths: ``conv2d``, ``max_pool2d``,
                            ``layer_norm``, ``cross_entropy``, ...
:mod:`.layers`              ``Linear``, ``Conv2d``, ``MaxPool2d``,
                            ``AvgPool2d``, ``LayerNorm``, ``BatchNorm``,
                            ``Dropout``, ``Embedding``,
                            ``CausalSelfAttention``: ``init(key) -> params``,
                            ``apply(params, x)``
:mod:`.initializers`        glorot/xavier, he/kaiming, lecun, normal, zeros
==========================  ===================================================

Everything is written with gpuad ops, so it runs on any backend and device
and every transform differentiates it.
"""

from . import functional, initializers  # noqa: F401
from .activations import (  # noqa: F401
    gelu, log_softmax, logsumexp, ndtr, relu, sigmoid, silu, softmax, softplus, tanh,
)
from .functional import (  # noqa: F401
    accuracy, avg_pool2d, batch_norm, binary_cross_entropy_with_logits, causal_self_attention, conv2d,
    cross_entropy, dropout, embedding, layer_norm, linear, max_pool2d, mse, pad2d,
)
from .initializers import (  # noqa: F401
    glorot_normal, glorot_uniform, he_normal, he_uniform, kaiming_normal, kaiming_uniform, lecun_normal,
    xavier_normal, xavier_uniform,
)
from .layers import (  # noqa: F401
    AvgPool2d, BatchNorm, CausalSelfAttention, Conv2d, Dropout, Embedding, LayerNorm, Linear, MaxPool2d,
)

bce_with_logits = binary_cross_entropy_with_logits

__all__ = [
    # activations
    "relu", "sigmoid", "softplus", "silu", "gelu", "tanh", "softmax", "log_softmax", "logsumexp", "ndtr",
    # functional layers and losses
    "linear", "conv2d", "pad2d", "max_pool2d", "avg_pool2d", "layer_norm", "batch_norm", "dropout",
    "embedding", "causal_self_attention", "cross_entropy", "mse", "binary_cross_entropy_with_logits",
    "bce_with_logits", "accuracy",
    # layers
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "LayerNorm", "BatchNorm", "Dropout", "Embedding",
    "CausalSelfAttention",
    # initialisers
    "initializers", "glorot_uniform", "glorot_normal", "xavier_uniform", "xavier_normal", "he_normal",
    "he_uniform", "kaiming_normal", "kaiming_uniform", "lecun_normal",
]
