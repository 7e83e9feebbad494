# Pinned versions of the local test environment's tools. Changing one rebuilds only that tool:
# every build is cached outside the repository under a directory keyed by its version.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.19.5
# The Kubernetes version helm templates for when not told (helm v3.19 is built against 1.34).
HELM_KUBE_VERSION=1.34
KWOK_VERSION=v0.8.0
ACTIONLINT_VERSION=v1.7.12
# sops, for encrypted values files (with age keys; age and age-keygen come from Debian's `age`).
SOPS_VERSION=v3.13.3
# Registry C, the token-auth registry (Debian's docker-registry serves A and B).
DISTRIBUTION_VERSION=v3.1.2
# Only for the benchmarks that compare umbrella with them.
KBLD_VERSION=v0.46.0
KAPP_VERSION=v0.64.0
