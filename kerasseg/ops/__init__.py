"""The ground floor: operations Keras lacks, each written once.

- `kerasseg.ops.checks`: argument checks (`check_int`, `check_number`, `to_numpy`, ...).
- `kerasseg.ops.image`: image batch checks, dtypes, grey conversion.
- `kerasseg.ops.components`: connected-component labelling and geodesic growing.
- `kerasseg.ops.detection`: RoIAlign, NMS and box operations (TensorFlow; imported only by
  the modules that need it, so that `import kerasseg` stays backend-neutral).
"""

__all__ = []  # the submodules are the API: kerasseg.ops.checks, ...
