"""Test helpers shared by the sidecar suites (not shipped with any sidecar).

* `fake_node.FakeNode` - stand-in for didmesh-node's JWKS and tokens, HTTP or HTTPS.
* `upstream.StandInUpstream` - stand-in for home-api in sidecar mode (trusts x-jwt-payload).
* `procs.Child` - a sidecar as a child process that always gets stopped.
* `local-ca.sh` - throwaway CA and server certificate, made with openssl.
"""
