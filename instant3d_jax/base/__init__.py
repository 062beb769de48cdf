"""The base layer training and inference both stand on: the device mesh (mesh.py), logical-axis
sharding (sharding.py), multi-process start-up (multihost.py) and orbax checkpoint I/O
(checkpoint.py). It imports nothing of the project but `errors` and `fileio` (docs/design.md §2,
checked by tests/test_module_structure.py)."""
