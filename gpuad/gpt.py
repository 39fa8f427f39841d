"""A small decoder-only transformer (GPT) written with :mod:`gpuad.nn`.

The model is functional like every ``gpuad.nn`` layer: :meth:`GPT.init`
returns the parameters (a pytree of arrays on the key's device) and
:meth:`GPT.apply` maps token ids ``(B, T)`` to logits ``(B, T, V)``::

    from gpuad import random
    from gpuad.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=100, context=64, d_model=64, n_layers=2, n_heads=4))
    params = model.init(random.key(0))
    logits = model.apply(params, ids)                     # ids: (B, T) int64 -> (B, T, 100)
    logits = model.apply(params, ids, checkpoint="uniform")   # same values, less tape

Each block is pre-norm: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` with
``mlp = Linear(D, 4D) -> gelu -> Linear(4D, D)``.  The blocks form a chain
of ``(step, params)`` pairs, so ``checkpoint="uniform"`` or ``"optimal"``
runs them under :func:`gpuad.checkpoint_sequential` and ``"block"`` wraps
each block in :func:`gpuad.checkpoint`; the values and gradients do not
change, only the memory the tape holds and the time spent recomputing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import nn, random
from . import xp as gxp
from ._args import int_or_none
from ._dtypes import dtype_name

__all__ = ["GPTConfig", "GPT", "CHECKPOINT_MODES", "available_strategies", "sample"]

#: ``apply(..., checkpoint=...)`` values besides the strategies of
#: :func:`gpuad.checkpoint_sequential` (:func:`available_strategies`): no
#: checkpointing, or :func:`gpuad.checkpoint` around each block.
CHECKPOINT_MODES = ("none", "block")


def available_strategies():
    """The strategies of :func:`gpuad.checkpoint_sequential` in this build (a tuple of str).

    Read at run time from ``gpuad.checkpointing`` (``STRATEGIES``) or the
    chain executor behind it, so a strategy added later is picked up.
    """
    from . import checkpointing

    names = getattr(checkpointing, "STRATEGIES", None)
    if names is None:
        from . import _sequential

        names = getattr(_sequential, "STRATEGIES", ())
    return tuple(names)


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of :class:`GPT`.

    Attributes
    ----------
    vocab_size : int
        ``V``, the number of token ids.
    context : int
        ``T_max``, the longest sequence (size of the position table).
    d_model : int
        ``D``, the width of the residual stream.
    n_layers : int
        ``L``, the number of transformer blocks.
    n_heads : int
        Attention heads; divides ``D``.
    mlp_ratio : int
        The MLP's hidden width is ``mlp_ratio * D``.
    """

    vocab_size: int
    context: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self):
        for name in ("vocab_size", "context", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            v = getattr(self, name)
            n = int_or_none(v)
            if n is None or n < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {v!r}")
            object.__setattr__(self, name, n)  # a NumPy integer becomes an int (frozen or not)
        if self.d_model % self.n_heads:
            raise ValueError(f"GPTConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")


class GPT:
    """Token and position embeddings, ``L`` pre-norm blocks, a final LayerNorm and a linear head.

    Parameters
    ----------
    config : GPTConfig

    Notes
    -----
    Parameters (``D = d_model``, ``V = vocab_size``)::

        {"tok": {"table": (V, D)}, "pos": {"table": (T_max, D)},
         "blocks": [{"ln1": {"gamma", "beta": (D,)}, "attn": {"wqkv": (D, 3D), "bqkv": (3D,),
                     "wo": (D, D), "bo": (D,)}, "ln2": ..., "fc": {"w": (D, 4D), "b": (4D,)},
                     "proj": {"w": (4D, D), "b": (D,)}}, ...],           # L blocks
         "ln_f": {"gamma", "beta": (D,)}, "head": {"w": (D, V), "b": (V,)}}

    The output projections of each block (``attn.wo`` and ``proj.w``) are
    scaled by ``1 / sqrt(2 L)`` at initialisation (GPT-2), so the residual
    stream's variance does not grow with depth.
    """

    def __init__(self, config):
        self.config = c = config
        d, h = c.d_model, c.mlp_ratio * c.d_model
        self.tok = nn.Embedding(c.vocab_size, d)
        self.pos = nn.Embedding(c.context, d)
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.CausalSelfAttention(d, c.n_heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, h)
        self.proj = nn.Linear(h, d)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, c.vocab_size)

    # --- parameters -----------------------------------------------------------------
    def init(self, key, dtype="float32"):
        """Parameters (see the class notes) on the key's device, in ``dtype``."""
        c = self.config
        k_tok, k_pos, k_head, k_blocks = random.split(key, 4)
        scale = 1.0 / math.sqrt(2 * c.n_layers)
        blocks = []
        for i in range(c.n_layers):
            ka, kf, kp = random.split(random.fold_in(k_blocks, i), 3)
            attn = self.attn.init(ka, dtype)
            attn["wo"] = attn["wo"] * scale
            proj = self.proj.init(kp, dtype)
            proj["w"] = proj["w"] * scale
            blocks.append({"ln1": self.ln1.init(ka, dtype), "attn": attn, "ln2": self.ln2.init(kf, dtype),
                           "fc": self.fc.init(kf, dtype), "proj": proj})
        return {"tok": self.tok.init(k_tok, dtype), "pos": self.pos.init(k_pos, dtype), "blocks": blocks,
                "ln_f": self.ln_f.init(k_head, dtype), "head": self.head.init(k_head, dtype)}

    # --- forward ----------------------------------------------------------------------
    def block(self, p, x):
        """One transformer block: ``(B, T, D)`` -> ``(B, T, D)``.

        Parameters
        ----------
        p : dict
            One entry of ``params["blocks"]``.
        x : array, shape ``(B, T, D)``
        """
        x = x + self.attn.apply(p["attn"], _norm(self.ln1, p["ln1"], x))
        h = nn.gelu(self.fc.apply(p["fc"], _norm(self.ln2, p["ln2"], x)))
        return x + self.proj.apply(p["proj"], h)

    def embed(self, params, ids):
        """Token plus position embeddings: ids ``(B, T)`` -> ``(B, T, D)``."""
        t = ids.shape[-1]
        if t > self.config.context:
            raise ValueError(f"GPT: sequence of length {t} is longer than the context {self.config.context}")
        pos = gxp.arange(t, device=ids.device)
        return self.tok.apply(params["tok"], ids) + self.pos.apply(params["pos"], pos)

    def blocks(self, params, x, checkpoint="none", **options):
        """Run the ``L`` blocks on ``x`` of shape ``(B, T, D)``, checkpointed as asked.

        Parameters
        ----------
        params : dict
            The model's parameters.
        x : array, shape ``(B, T, D)``
        checkpoint : str
            ``"none"`` (a plain loop), ``"block"`` (:func:`gpuad.checkpoint`
            around each block) or a strategy of
            :func:`gpuad.checkpoint_sequential` (:func:`available_strategies`).
        **options
            Passed to ``checkpoint_sequential`` (``segments``,
            ``snapshots``, ``budget_bytes``).

        Returns
        -------
        array, shape ``(B, T, D)``
        """
        if checkpoint == "none":
            for p in params["blocks"]:
                x = self.block(p, x)
            return x
        from . import checkpointing

        if checkpoint == "block":
            step = checkpointing.checkpoint(self.block)
            for p in params["blocks"]:
                x = step(p, x)
            return x
        if checkpoint not in available_strategies():
            raise ValueError(f"GPT: checkpoint strategy {checkpoint!r} is not available in this build of "
                             f"gpuad.checkpointing (available: none, block, {', '.join(available_strategies())})")
        return checkpointing.checkpoint_sequential([(self.block, p) for p in params["blocks"]], x,
                                                   strategy=checkpoint, **options)

    def apply(self, params, ids, checkpoint="none", **options):
        """Logits of the next token at every position.

        Parameters
        ----------
        params : dict
        ids : integer array, shape ``(B, T)`` with ``T <= context``
        checkpoint : str, default "none"
            How to checkpoint the blocks (see :meth:`blocks`).
        **options
            For ``checkpoint_sequential``.

        Returns
        -------
        array, shape ``(B, T, V)``
            ``logits[b, t]`` scores the token that follows ``ids[b, :t + 1]``.
        """
        x = self.blocks(params, self.embed(params, ids), checkpoint, **options)
        return self.head.apply(params["head"], _norm(self.ln_f, params["ln_f"], x))

    def loss(self, params, ids, targets, checkpoint="none", **options):
        """Mean next-token cross-entropy in nats.

        Parameters
        ----------
        params : dict
        ids, targets : integer arrays, shape ``(B, T)``
        checkpoint : str
        **options

        Returns
        -------
        array, shape ``()``
        """
        logits = self.apply(params, ids, checkpoint, **options)
        if dtype_name(logits.dtype) in ("float16", "bfloat16"):
            logits = gxp.astype(logits, "float32")  # half-precision compute: the softmax in float32
        return nn.cross_entropy(logits, targets)


def _norm(layer, p, x):
    """``layer.apply(p, x)``; half-precision inputs are normalised in float32 (then cast back)."""
    if dtype_name(x.dtype) not in ("float16", "bfloat16"):
        return layer.apply(p, x)
    f32 = {k: gxp.astype(v, "float32") for k, v in p.items()}
    return gxp.astype(layer.apply(f32, gxp.astype(x, "float32")), x.dtype)


def sample(model, params, prompt, length, key, temperature=1.0):
    """Generate ``length`` tokens after ``prompt``, on the parameters' device.

    Parameters
    ----------
    model : GPT
    params : dict
    prompt : integer array, shape ``(P,)`` with ``P >= 1``
    length : int
        Tokens to generate.
    key : gpuad.random key
        Fixes the draws: the same key gives the same text on every backend
        (up to ties in floating-point rounding).
    temperature : float, default 1.0
        ``0`` is greedy decoding (argmax); otherwise sample from
        ``softmax(logits / temperature)`` with the Gumbel-max trick.

    Returns
    -------
    int64 array, shape ``(P + length,)``
        The prompt followed by the generated tokens (still on the device:
        nothing is copied to the host while generating).
    """
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature!r}")
    t_max = model.config.context
    seq = gxp.astype(gxp.reshape(prompt, (1, -1)), "int64")
    for i in range(length):
        ctx = seq[:, max(0, seq.shape[1] - t_max):]
        logits = model.apply(params, ctx)[0, -1, :]                         # (V,)
        logits = gxp.astype(logits, "float32")
        if temperature == 0:
            nxt = gxp.argmax(logits)
        else:
            u = random.uniform(random.fold_in(key, i), tuple(logits.shape), minval=1e-7, maxval=1.0)
            gumbel = -gxp.log(-gxp.log(u))
            nxt = gxp.argmax(logits / temperature + gumbel)
        seq = gxp.concat([seq, gxp.reshape(gxp.astype(nxt, "int64"), (1, 1))], axis=1)
    return seq[0, :]
