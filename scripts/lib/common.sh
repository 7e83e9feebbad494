# Shared settings and helpers of the local test environment scripts.

TESTENV_HOME=${UMBRELLA_TESTENV_HOME:-$HOME/.cache/umbrella-testenv}
TESTENV_TOOLS=$TESTENV_HOME/tools
TESTENV_RUN=$TESTENV_HOME/run

REGISTRY_A=127.0.0.1:5000
REGISTRY_B=127.0.0.1:5443
REGISTRY_B_USER=umbrella
# Registry C asks for bearer tokens from the token server, as public registries do.
REGISTRY_C=127.0.0.1:5002
REGISTRY_C_USER=umbrella
TOKEN_SERVER=127.0.0.1:5003
TOKEN_SERVICE=umbrella-testenv-registry-c
TOKEN_ISSUER=umbrella-testenv-token-server
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
CONTROLLER_MANAGER_PORT=10357
SCHEDULER_PORT=10359
KWOK_PORT=10347
KWOK_NODES=3
# What each fake node offers (JSON, also valid YAML): room for the benchmarks' pods, and the
# ephemeral storage charts request.
NODE_RESOURCES='{"cpu": "64", "memory": "512Gi", "ephemeral-storage": "1Ti", "pods": "1000"}'
KUBE_CONTEXT=umbrella-test
# A locally made base image: nothing can be pulled from a public registry here.
BASE_IMAGE=umbrella.local/busybox:1.35
# The same image pushed to registry A stands for a third-party image that is not built here.
THIRD_PARTY_IMAGE=$REGISTRY_A/mirror/busybox:1.35
# The published charts of tests/fixtures/real-world, their images mirrored into registry A under
# their own names (the same small image stands for each), and the tags the example's image
# policies follow (umbrella-chart/image-policies.yaml: 1.35.x releases, stg-N builds).
MIRRORED_IMAGES="mirror/busybox:1.35 mirror/busybox:1.35.0 mirror/busybox:stg-1 ingress-nginx/controller:v1.15.1 ingress-nginx/kube-webhook-certgen:v1.6.9 oliver006/redis_exporter:v1.89.0"

log() { printf '[testenv] %s\n' "$*" >&2; }
die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }

# Where our own Docker engine lives when no reachable one is found.
OWN_DOCKER_DIR=$TESTENV_RUN/docker
OWN_DOCKER_HOST=unix://$OWN_DOCKER_DIR/docker.sock
DOCKER_CONFIG_DIR=$TESTENV_RUN/docker-config
KUBE_DIR=$TESTENV_RUN/kube
KUBECONFIG_FILE=$KUBE_DIR/kubeconfig
