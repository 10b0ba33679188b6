#!/usr/bin/env bash
# Certificates for the secured compose cluster (deploy/docker-compose.secure.yml), made with
# openssl: a CA and one broker certificate valid for strom-1..3, localhost and 127.0.0.1, as PEM
# (the key and chain in one file: Kafka's ssl.keystore.type=PEM). Written to
# deploy/secure/certs/ (not in git). For a test cluster: the key is readable by the container
# user; use your own CA and keys elsewhere.
#
#   bash deploy/make-certs.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-secure/certs}"
mkdir -p "$out"
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/O=strom/CN=Strom compose CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/O=strom/OU=brokers/CN=broker" -keyout broker.key -out broker.csr 2>/dev/null
cat > broker.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:strom-1,DNS:strom-2,DNS:strom-3,DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
  -extfile broker.ext -out broker.crt 2>/dev/null
# PKCS#8 key, then the chain: one PEM keystore file.
openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
cat broker.pk8 broker.crt ca.pem > broker.pem
chmod 644 broker.pem ca.pem
rm -f broker.csr broker.ext broker.key broker.pk8 ca.srl
echo "certificates in $(pwd): ca.pem (truststore), broker.pem (keystore)"
