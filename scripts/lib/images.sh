# The image side of the environment: a Docker engine, registry A (plain HTTP), registry B
# (TLS with a generated CA, htpasswd basic auth), registry C (plain HTTP on loopback, bearer
# tokens from our token server), a Docker config with B's and C's credentials and B's CA, a
# locally made base image, and a "third-party" image seeded into registry A.

# sudo for package installs where not root (GitHub's runners); nothing when root (here, CI).
sudo_if_needed() { [ "$(id -u)" = 0 ] || echo sudo; }

ensure_packages() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  { $(sudo_if_needed) apt-get update -qq && $(sudo_if_needed) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$TESTENV_RUN/apt.log" 2>&1 ||
    { tail -n 20 "$TESTENV_RUN/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

# docker_ping HOST: the engine at HOST (unix:// or tcp://) answers /_ping.
docker_ping() {
  case "$1" in
    unix://*) curl -sf --max-time 3 --unix-socket "${1#unix://}" http://localhost/_ping ;;
    tcp://*) curl -sf --max-time 3 "http://${1#tcp://}/_ping" ;;
    *) return 1 ;;
  esac
}

docker_host() { cat "$TESTENV_RUN/docker-host" 2>/dev/null; }

# Reuse a reachable engine (DOCKER_HOST, then the default socket); else start Debian's dockerd.
up_docker() {
  local host
  if daemon_running dockerd; then
    host=$OWN_DOCKER_HOST
  elif [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "$OWN_DOCKER_HOST" ] && docker_ping "$DOCKER_HOST"; then
    host=$DOCKER_HOST
    log "reusing the Docker engine at $host"
  elif docker_ping unix:///var/run/docker.sock; then
    host=unix:///var/run/docker.sock
    log "reusing the Docker engine at $host"
    else
    # Debian's engine only when none is reachable: installing it beside another distribution's
    # engine (GitHub's runners) would fight over containerd and runc.
    command -v dockerd >/dev/null || ensure_packages docker.io
    mkdir -p "$OWN_DOCKER_DIR"
    log "starting dockerd ($OWN_DOCKER_HOST)"
    start_daemon dockerd dockerd --data-root "$OWN_DOCKER_DIR/data" --exec-root "$OWN_DOCKER_DIR/exec" \
      --host "$OWN_DOCKER_HOST" --pidfile "$OWN_DOCKER_DIR/dockerd.pid"
    host=$OWN_DOCKER_HOST
  fi
    wait_until dockerd 60 docker_ping "$host"
  echo "$host" >"$TESTENV_RUN/docker-host"
  command -v docker >/dev/null || ensure_packages docker.io
}

pki_dir() { echo "$TESTENV_RUN/pki"; }

# One CA for the whole environment signs registry B's and the API server's certificates.
ensure_ca() {
  local pki
  pki=$(pki_dir)
  mkdir -p "$pki"
  [ -f "$pki/ca.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=umbrella-testenv-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" >/dev/null 2>&1 || die "openssl: cannot create the CA"
}

# issue_cert NAME SUBJECT [SAN]: a key and a CA-signed certificate in the pki directory.
issue_cert() {
  local name=$1 subject=$2 san=${3:-} pki ext
  pki=$(pki_dir)
  [ -f "$pki/$name.crt" ] && return 0
  ext=$(mktemp)
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
  [ -n "$san" ] && echo "subjectAltName=$san" >>"$ext"
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr" >/dev/null 2>&1 &&
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
      -extfile "$ext" -out "$pki/$name.crt" >/dev/null 2>&1 || die "openssl: cannot issue the $name certificate"
  rm -f "$ext" "$pki/$name.csr"
}

# registry_password NAME: a generated password, kept in the registry's directory.
registry_password() {
  local f
  f=$(daemon_dir "$1")/password
  [ -f "$f" ] || { mkdir -p "$(dirname "$f")" && openssl rand -hex 16 >"$f"; }
  cat "$f"
}

write_registry_config() {
  local name=$1 addr=$2 extra=$3 dir
  dir=$(daemon_dir "$name")
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
$extra
EOF
}

up_registry_a() {
  daemon_running registry-a || {
    write_registry_config registry-a "$REGISTRY_A" ""
    start_daemon registry-a docker-registry serve "$(daemon_dir registry-a)/config.yml"
  }
  wait_until registry-a 30 curl -sf --max-time 2 "http://$REGISTRY_A/v2/"
}

up_registry_b() {
  local dir pki pass
  dir=$(daemon_dir registry-b)
  pki=$(pki_dir)
  pass=$(registry_password registry-b)
  issue_cert registry-b "/CN=127.0.0.1" "IP:127.0.0.1,DNS:localhost"
  if ! daemon_running registry-b; then
    htpasswd -Bbn "$REGISTRY_B_USER" "$pass" >"$dir/htpasswd" 2>/dev/null || die "htpasswd failed"
    write_registry_config registry-b "$REGISTRY_B" "  tls:
    certificate: $pki/registry-b.crt
    key: $pki/registry-b.key
auth:
  htpasswd:
    realm: umbrella-testenv
    path: $dir/htpasswd"
    start_daemon registry-b docker-registry serve "$dir/config.yml"
  fi
  wait_until registry-b 30 curl -sf --max-time 2 --cacert "$pki/ca.crt" -u "$REGISTRY_B_USER:$pass" "https://$REGISTRY_B/v2/"
}

# The key that signs registry C's tokens, and the self-signed certificate the registry trusts
# (its rootcertbundle; tokens carry it in their x5c header).
ensure_token_signer() {
  local pki
  pki=$(pki_dir)
  [ -f "$pki/token-signer.crt" ] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/token-signer.key" 2>/dev/null &&
    openssl req -x509 -new -key "$pki/token-signer.key" -subj "/CN=$TOKEN_ISSUER" -days 3650 \
      -out "$pki/token-signer.crt" >/dev/null 2>&1 || die "openssl: cannot create the token signing key"
}

# Who may do what on registry C (the token server's rules; the first match decides):
# forbidden/* nobody; pullonly/* the user may only pull; the rest the user; and public/*
# anyone may pull, anonymous too. Tokens for short/* live 1 s; the first token for a scope of stale/* is already
# expired (a revoked token, or a token server whose clock runs ahead).
write_token_server_config() {
  cat >"$1" <<EOF
{
  "issuer": "$TOKEN_ISSUER",
  "service": "$TOKEN_SERVICE",
  "users": {"$REGISTRY_C_USER": "$2"},
  "rules": [
    {"account": "*", "repositories": "forbidden/*", "actions": []},
    {"account": "$REGISTRY_C_USER", "repositories": "pullonly/*", "actions": ["pull"]},
    {"account": "$REGISTRY_C_USER", "repositories": "*", "actions": ["*"]},
    {"account": "*", "repositories": "public/*", "actions": ["pull"]}
  ],
  "default_seconds": 60,
  "lifetimes": [{"repositories": "short/*", "seconds": 1}],
  "expired_first": ["stale/*"]
}
EOF
}

up_token_server() {
  local dir pki
  dir=$(daemon_dir token-server)
  pki=$(pki_dir)
  ensure_token_signer
  if ! daemon_running token-server; then
    mkdir -p "$dir"
    write_token_server_config "$dir/config.json" "$(registry_password registry-c)"
    start_daemon token-server "$(own_program_bin token-server)" -addr "$TOKEN_SERVER" -key "$pki/token-signer.key" \
      -cert "$pki/token-signer.crt" -config "$dir/config.json"
  fi
  wait_until token-server 30 curl -sf --max-time 2 "http://$TOKEN_SERVER/healthz"
}

registry_c_challenges() {
  [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$REGISTRY_C/v2/")" = 401 ]
}

# Registry C: distribution v3 from its Go module, with token auth. Its tracing export is
# switched off (nothing listens for it here).
up_registry_c() {
  local dir
  dir=$(daemon_dir registry-c)
  if ! daemon_running registry-c; then
    write_registry_config registry-c "$REGISTRY_C" "auth:
  token:
    realm: http://$TOKEN_SERVER/token
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $(pki_dir)/token-signer.crt"
    OTEL_TRACES_EXPORTER=none start_daemon registry-c "$(go_tool_dir registry "$DISTRIBUTION_VERSION")/bin/registry" \
      serve "$dir/config.yml"
  fi
  # A 401 with the bearer challenge is the registry up.
  wait_until registry-c 30 registry_c_challenges
}

# The Docker config that tests and the demo use: B's and C's credentials, B's CA (certs.d).
write_docker_config() {
  local b c
  b=$(printf '%s:%s' "$REGISTRY_B_USER" "$(registry_password registry-b)" | base64 -w0)
  c=$(printf '%s:%s' "$REGISTRY_C_USER" "$(registry_password registry-c)" | base64 -w0)
  mkdir -p "$DOCKER_CONFIG_DIR/certs.d/$REGISTRY_B"
  cp "$(pki_dir)/ca.crt" "$DOCKER_CONFIG_DIR/certs.d/$REGISTRY_B/ca.crt"
  printf '{\n  "auths": {\n    "%s": { "auth": "%s" },\n    "%s": { "auth": "%s" }\n  }\n}\n' \
    "$REGISTRY_B" "$b" "$REGISTRY_C" "$c" >"$DOCKER_CONFIG_DIR/config.json"
}

# The example's Dockerfiles build FROM this image: Debian's static busybox, imported locally.
ensure_base_images() {
  local host root
  host=$(docker_host)
  if ! DOCKER_HOST=$host docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "importing $BASE_IMAGE from Debian's busybox-static"
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    # Relative links: `busybox --install` would point them at this machine's path.
    (cd "$root/bin" && for a in $(./busybox --list); do [ "$a" = busybox ] || ln -s busybox "$a"; done)
    tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
      DOCKER_HOST=$host docker import -c 'CMD ["/bin/sh"]' - "$BASE_IMAGE" >/dev/null || die "docker import of $BASE_IMAGE failed"
    rm -rf "$root"
  fi
  local image
  for image in $MIRRORED_IMAGES; do
    mirror_image "$host" "$image"
  done
}

# Pushes the base image to registry A as `image` (repository:tag) unless it is there.
mirror_image() {
  local host=$1 image=$2
  if ! curl -sf --max-time 3 -o /dev/null -I \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY_A/v2/${image%:*}/manifests/${image##*:}"; then
    log "seeding $REGISTRY_A/$image"
    DOCKER_HOST=$host docker tag "$BASE_IMAGE" "$REGISTRY_A/$image" &&
      DOCKER_HOST=$host docker push "$REGISTRY_A/$image" >/dev/null || die "docker push $REGISTRY_A/$image failed"
  fi
}
