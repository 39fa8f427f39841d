"""Every differentiable primitive is run through check_grads (both modes, order 2).

Each op test module declares ``COVERS``: the primitives whose gradients it
checks that way.  This test fails when a primitive is registered without
such a check, or when a module claims a primitive that does not exist.
"""

import ast
import pathlib

import gpuad

TESTS = pathlib.Path(__file__).resolve().parent.parent


def _declared_covers(path):
    """The literal ``COVERS`` set of a test module, read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COVERS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _covered():
    covered = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        for prim in _declared_covers(path):
            covered.setdefault(prim, []).append(path.name)
    return covered


def differentiable_primitives():
    # Fused primitives have no rules: under transforms their composite runs
    # (tests/test_fused.py checks both paths agree).
    return {name for name, p in gpuad.PRIMITIVES.items()
            if not p.nondiff and p.composite is None and not name.startswith("test_only")}


def test_every_differentiable_primitive_is_checked():
    import gpuad.nn  # noqa: F401  (registers the nn primitives)

    covered = _covered()
    missing = sorted(differentiable_primitives() - set(covered))
    assert not missing, f"primitives with no check_grads test: {missing}"


def test_covers_names_real_primitives():
    import gpuad.nn  # noqa: F401

    unknown = sorted(set(_covered()) - set(gpuad.PRIMITIVES))
    assert not unknown, f"COVERS names unknown primitives: {unknown}"
