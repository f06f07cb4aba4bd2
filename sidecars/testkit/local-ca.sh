#!/usr/bin/env bash
# Make a throwaway local CA and a server certificate for loopback, with openssl.
#
#   testkit/local-ca.sh OUT_DIR [NAME]
#
# writes OUT_DIR/ca.pem (trust this: NODE_EXTRA_CA_CERTS, Envoy's trusted_ca,
# requests' verify=), OUT_DIR/NAME.pem and OUT_DIR/NAME-key.pem (give these to
# the server, e.g. didmesh-node --tls-cert/--tls-key). NAME defaults to "node".
# The server certificate names localhost, 127.0.0.1 and ::1, and whatever
# LOCAL_CA_EXTRA_SAN adds (e.g. "DNS:node3" for a container). Both keys are
# P-256: every TLS stack here (BoringSSL in Envoy, OpenSSL in Node.js and
# Python, rustls) accepts them. Valid for 2 days; make a new one per run.
set -euo pipefail
out=${1:?usage: local-ca.sh OUT_DIR [NAME]}
name=${2:-node}
mkdir -p "$out"
cd "$out"
openssl req -x509 -new -nodes -days 2 -subj "/CN=didmesh local test CA" \
  -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -nodes -subj "/CN=localhost" \
  -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
cat > "$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1${LOCAL_CA_EXTRA_SAN:+,$LOCAL_CA_EXTRA_SAN}
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
  -days 2 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
rm -f "$name.csr" "$name.ext" ca.srl
chmod 600 ca-key.pem "$name-key.pem"
