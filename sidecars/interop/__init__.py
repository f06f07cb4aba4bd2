"""Interop matrix for didmesh token verifiers: `jose` builds tokens, `matrix`
holds the hostile variants and the runner (`python -m interop.matrix --help`)."""
