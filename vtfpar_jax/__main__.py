"""`python -m vtfpar_jax COMMAND`: the same as `vtfpar COMMAND` (vtfpar_jax.cli)."""

from vtfpar_jax.cli import entry

entry()
