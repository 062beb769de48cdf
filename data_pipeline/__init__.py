"""Multi-view data: the procedural world, real-render importer, ArrayRecord/TFDS storage, grain
input pipelines. See data_pipeline/README.md. Never imports instant3d_jax.models."""
