"""Relying-party tests against a real didmesh network (see test_rp.py)."""
