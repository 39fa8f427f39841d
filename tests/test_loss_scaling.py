"""gpuad.loss_scaling: dynamic loss scaling on the device."""

import math

import numpy as np


def test_dynamic_loss_scaling_skips_overflow_and_grows(backend):
    from gpuad import optim
    from gpuad.loss_scaling import init_loss_scale, loss_scaled_step

    p = {"w": backend.asarray([1.0, 2.0], dtype="float32")}
    opt = optim.sgd(0.5)
    st = opt.init(p)
    ls = init_loss_scale(p["w"], scale=8.0)
    bad = {"w": backend.asarray([math.inf, 1.0], dtype="float32")}
    p1, st1, ls1 = loss_scaled_step(opt, p, bad, st, ls, growth_interval=2)
    np.testing.assert_array_equal(backend.to_numpy(p1["w"]), [1.0, 2.0])   # skipped
    assert float(ls1["scale"]) == 4.0 and int(ls1["skipped"]) == 1
    good = {"w": backend.asarray([4.0, 8.0], dtype="float32")}            # scaled by 4: true grads 1, 2
    p2, st2, ls2 = loss_scaled_step(opt, p1, good, st1, ls1, growth_interval=2)
    np.testing.assert_allclose(backend.to_numpy(p2["w"]), [0.5, 1.0])
    assert float(ls2["scale"]) == 4.0 and int(ls2["good"]) == 1
    _, _, ls3 = loss_scaled_step(opt, p2, good, st2, ls2, growth_interval=2)
    assert float(ls3["scale"]) == 8.0 and int(ls3["good"]) == 0


def test_training_gpt_reexports_the_same_functions():
    from gpuad import loss_scaling, training_gpt

    assert training_gpt.loss_scaled_step is loss_scaling.loss_scaled_step
    assert training_gpt.init_loss_scale is loss_scaling.init_loss_scale


def test_init_loss_scale_docstring_has_parameters_and_shapes():
    import inspect

    from gpuad import loss_scaling

    doc = inspect.getdoc(loss_scaling.init_loss_scale)
    assert "Parameters\n----------\nlike : array" in doc and "scale : float" in doc
    assert "Returns\n-------\n" in doc and "shape ()" in doc
