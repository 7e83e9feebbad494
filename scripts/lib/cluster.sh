# The Kubernetes side of the environment: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (real programs built from source) and kwok playing the kubelet for fake nodes.

# write_kubeconfig FILE USER: a kubeconfig with context $KUBE_CONTEXT and embedded credentials.
write_kubeconfig() {
  local file=$1 user=$2 pki
  pki=$(pki_dir)
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $KUBE_CONTEXT
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: $KUBE_CONTEXT
  context:
    cluster: $KUBE_CONTEXT
    user: $user
current-context: $KUBE_CONTEXT
EOF
}

ensure_cluster_pki() {
  local pki
  pki=$(pki_dir)
  mkdir -p "$KUBE_DIR"
  issue_cert kube-apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert admin "/O=system:masters/CN=umbrella-admin"
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager"
  issue_cert kube-scheduler "/CN=system:kube-scheduler"
  [ -f "$pki/sa.key" ] || openssl genrsa -out "$pki/sa.key" 2048 >/dev/null 2>&1 || die "openssl: service-account key"
  [ -f "$pki/sa.pub" ] || openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" >/dev/null 2>&1 || die "openssl: service-account key"
  write_kubeconfig "$KUBECONFIG_FILE" admin
  write_kubeconfig "$KUBE_DIR/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$KUBE_DIR/kube-scheduler.kubeconfig" kube-scheduler
}

# The cluster starts empty each time the environment starts: what an earlier run (another clone,
# an interrupted test) deployed must not leak into this one's inventories.
up_etcd() {
  if ! daemon_running etcd; then
    rm -rf "$(daemon_dir etcd)/data"
    start_daemon etcd etcd --name umbrella-test --data-dir "$(daemon_dir etcd)/data" \
      --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "umbrella-test=http://127.0.0.1:$ETCD_PEER_PORT" \
      --quota-backend-bytes 4294967296
  fi
  wait_until etcd 60 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

kube_healthy() { curl -sfk --max-time 2 "https://127.0.0.1:$1/healthz"; }

up_apiserver() {
  local pki
  pki=$(pki_dir)
  # The endpoint reconciler is off: a loopback address cannot be a Service endpoint.
  daemon_running kube-apiserver || start_daemon kube-apiserver kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$APISERVER_PORT" --tls-cert-file "$pki/kube-apiserver.crt" --tls-private-key-file "$pki/kube-apiserver.key" \
    --client-ca-file "$pki/ca.crt" --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC --allow-privileged \
    --endpoint-reconciler-type none
  wait_until kube-apiserver 120 curl -sf --max-time 2 --cacert "$pki/ca.crt" "https://127.0.0.1:$APISERVER_PORT/readyz"
}

# The controllers' API rate limits are raised from their defaults (20 and 50 requests per
# second), as on a production control plane: with 1,000 objects the defaults, not the deploy
# tool, would set the pace.
up_controller_manager() {
  local pki kc
  pki=$(pki_dir)
  kc=$KUBE_DIR/kube-controller-manager.kubeconfig
  daemon_running kube-controller-manager || start_daemon kube-controller-manager kube-controller-manager \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
        --use-service-account-credentials --kube-api-qps 200 --kube-api-burst 400
  wait_until kube-controller-manager 60 kube_healthy "$CONTROLLER_MANAGER_PORT"
  # Pods can only be created once the service-account controller made the default account.
  wait_until kube-controller-manager 60 kubectl --kubeconfig "$KUBECONFIG_FILE" get serviceaccount default -n default
}

up_scheduler() {
  local kc=$KUBE_DIR/kube-scheduler.kubeconfig
  daemon_running kube-scheduler || start_daemon kube-scheduler kube-scheduler \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
        --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false \
    --kube-api-qps 200 --kube-api-burst 400
  wait_until kube-scheduler 60 kube_healthy "$SCHEDULER_PORT"
}

fake_nodes_yaml() {
  local i
  for i in $(seq 0 $((KWOK_NODES - 1))); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    type: kwok
status:
  allocatable: $NODE_RESOURCES
  capacity: $NODE_RESOURCES
EOF
  done
}

# Nodes created by an earlier `up` get the same resources (a Node's status is not applied).
update_node_resources() {
  local i
  for i in $(seq 0 $((KWOK_NODES - 1))); do
    kubectl --kubeconfig "$KUBECONFIG_FILE" patch node "kwok-node-$i" --subresource=status --type=merge \
      -p "{\"status\": {\"allocatable\": $NODE_RESOURCES, \"capacity\": $NODE_RESOURCES}}" >/dev/null
  done
}

up_kwok() {
  daemon_running kwok || start_daemon kwok kwok --kubeconfig "$KUBECONFIG_FILE" \
    --config "$(go_tool_dir kwok "$KWOK_VERSION")/stages-v2.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" --cidr 10.0.0.1/16 --node-ip 10.0.0.1
  wait_until kwok 60 curl -sf --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
  fake_nodes_yaml | kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f - >/dev/null || fail_daemon kwok "cannot create the fake nodes"
  update_node_resources || fail_daemon kwok "cannot set the fake nodes' resources"
  wait_until kwok 60 kubectl --kubeconfig "$KUBECONFIG_FILE" wait --for=condition=Ready node -l type=kwok --timeout=5s
}
