"""gpuad._args and the public arguments that use it: NumPy integers count as ints, floats never do."""

import numpy as np
import pytest

import gpuad
from gpuad import nn, random
from gpuad._args import int_or_none
from gpuad.gpt import GPTConfig


@pytest.mark.parametrize("v,want", [(3, 3), (np.int64(3), 3), (np.uint8(7), 7), (np.asarray(4), 4), (-2, -2)])
def test_integers_are_ints(v, want):
    got = int_or_none(v)
    assert got == want and type(got) is int


@pytest.mark.parametrize("v", [True, False, 2.5, 3.0, np.float32(3), "3", None, [3]])
def test_everything_else_is_none(v):
    assert int_or_none(v) is None


def test_numpy_integers_are_accepted_by_the_public_api():
    k = random.key(np.int64(3), like=np.zeros(1))
    assert np.array_equal(np.asarray(k), np.asarray(random.key(3, like=np.zeros(1))))
    assert len(random.split(k, np.int64(3))) == 3
    assert np.array_equal(np.asarray(random.fold_in(k, np.int32(4))), np.asarray(random.fold_in(k, 4)))
    cfg = GPTConfig(vocab_size=np.int64(11), context=8, d_model=8, n_layers=2, n_heads=2)
    assert type(cfg.vocab_size) is int
    assert gpuad.plan_checkpoints(np.int64(10), strategy="uniform", segments=np.int64(3)).segments == 3
    assert nn.Linear(np.int64(3), np.int64(2)).init(random.key(0, like=np.zeros(1)))["w"].shape == (3, 2)


@pytest.mark.parametrize("call,match", [
    (lambda k: random.split(k, 2.0), "random.split: num must be a positive int, got 2.0"),
    (lambda k: random.key(1.5), "random.key: seed must be an int, got float"),
    (lambda k: gpuad.plan_checkpoints(10.0), "plan_checkpoints: steps must be a positive int, got 10.0"),
    (lambda k: gpuad.plan_checkpoints(10, strategy="uniform", segments=np.float64(3)),
     "segments must be an int in"),
])
def test_floats_are_refused_by_name(call, match):
    k = random.key(0, like=np.zeros(1))
    with pytest.raises((TypeError, ValueError), match=match):
        call(k)


def test_roll_and_tile_take_numpy_integers():
    from gpuad import xp

    x = np.arange(4)
    np.testing.assert_array_equal(xp.roll(x, np.int64(1)), np.roll(x, 1))
    np.testing.assert_array_equal(xp.roll(x, np.int32(1), axis=np.int64(0)), np.roll(x, 1, axis=0))
    np.testing.assert_array_equal(xp.tile(x, np.int64(2)), np.tile(x, 2))
    with pytest.raises(ValueError, match="roll: shift must be an int when axis is None, got 1.5"):
        xp.roll(x, 1.5)
