"""The pure core: what PBT decides, and the records it keeps.

Search spaces, explore (perturb, resample, PB2), selection (truncation,
tournament, t-test, FIRE), ranking signals, the policy and its settings,
lineage records, ancestry and the best member, argument checks and errors.
Plain Python + NumPy: nothing here imports TensorFlow, Keras, JAX or PyTorch
(`tests/test_purity.py` walks the whole subpackage).
"""
