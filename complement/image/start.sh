#!/bin/sh
# Entry point of the complement-parley image (built by scripts/complement).
#
# Complement's contract: the server name is in $SERVER_NAME (hs1, hs2, ...);
# the client API answers plain HTTP on 8008 and federation HTTPS on 8448 with
# a certificate for $SERVER_NAME signed by Complement's CA, mounted at
# /complement/ca/ca.crt and ca.key; admin users are made through
# /_synapse/admin/v1/register with the shared secret "complement".
#
# Every setting below is a default: a PARLEY_* variable passed into the
# container (scripts/complement shares PASS_PARLEY_* from the host through
# COMPLEMENT_SHARE_ENV_PREFIX=PASS_) wins.
set -eu

: "${SERVER_NAME:?SERVER_NAME must name this homeserver (Complement sets hs1, hs2, ...)}"

ca_dir=/complement/ca
tls_dir=/tls

: "${PARLEY_REGISTRATION_SHARED_SECRET:=complement}"
# Complement registers and logs in many users quickly from one address.
: "${PARLEY_RATE_LIMITS_ENABLED:=false}"
: "${PARLEY_ACCOUNTS_BCRYPT_COST:=4}"
# Complement's test web server (URL preview targets) sits on a
# Docker-private address, which previews refuse by default (media.url_preview_allow_private).
: "${PARLEY_MEDIA_URL_PREVIEW_ALLOW_PRIVATE:=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16}"
export PARLEY_REGISTRATION_SHARED_SECRET PARLEY_RATE_LIMITS_ENABLED PARLEY_ACCOUNTS_BCRYPT_COST PARLEY_MEDIA_URL_PREVIEW_ALLOW_PRIVATE

if [ -r "$ca_dir/ca.crt" ] && [ -r "$ca_dir/ca.key" ]; then
	# A fresh certificate at every start: blueprint images are committed
	# containers that may be started again under another run's CA.
	mkdir -p "$tls_dir"
	parley generate-tls-cert --ca-cert "$ca_dir/ca.crt" --ca-key "$ca_dir/ca.key" \
		--name "$SERVER_NAME" --cert-out "$tls_dir/server.crt" --key-out "$tls_dir/server.key"
	: "${PARLEY_LISTEN_FEDERATION:=0.0.0.0:8448}"
	: "${PARLEY_TLS_CERTIFICATE:=$tls_dir/server.crt}"
	: "${PARLEY_TLS_KEY:=$tls_dir/server.key}"
	# Complement's own test servers present certificates from the same CA.
	: "${PARLEY_FEDERATION_TRUSTED_CA_FILE:=$ca_dir/ca.crt}"
	export PARLEY_LISTEN_FEDERATION PARLEY_TLS_CERTIFICATE PARLEY_TLS_KEY PARLEY_FEDERATION_TRUSTED_CA_FILE
else
	echo "start.sh: no CA at $ca_dir (not started by Complement?): running without the federation listener" >&2
fi

exec parley run --data-dir /data --listen 0.0.0.0:8008 --server-name "$SERVER_NAME" --open-registration
