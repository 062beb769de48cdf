"""The jobs behind the demo commands and the web app: `lrm` (`python -m instant3d_jax.demo`),
`mv` (`demo_mv`), `text3d` (`demo_text3d`) and `webapp` (`app`). Each command holds its flags and
a short `main` that calls `run` / `serve` here."""
