#!/bin/sh
# Makes a development CA and a certificate for the collector in DIR (the
# compose volume tollgate-tls), once: an existing certificate is kept, so
# agents keep trusting the same CA across `docker compose up`.
#
#   dev-certs.sh DIR
#
# Not for production: the CA key stays next to the certificates. Use your
# own CA (or cert-manager on Kubernetes) there.
set -eu
dir="$1"
if [ -s "$dir/tls.crt" ] && [ -s "$dir/tls.key" ]; then
    echo "certificates already in $dir"
    exit 0
fi
command -v openssl >/dev/null 2>&1 || apk add --no-cache openssl >/dev/null
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.crt -days 825 -subj "/CN=Tollgate development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout tls.key -out tls.csr -subj "/CN=tollgate"
printf '%s\n' \
    "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,DNS:tollgate-ingest,DNS:tollgate-process,IP:127.0.0.1" > ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out tls.crt -days 397 -extfile ext.cnf
rm -f tls.csr ext.cnf ca.srl
# The collector runs as 65532 (distroless nonroot).
chmod 644 ca.crt tls.crt tls.key
echo "made $dir/ca.crt and the collector's certificate"
