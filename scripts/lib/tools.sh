# Builds the test environment's Go programs once and caches them under
# $TESTENV_TOOLS/<name>-<version>/bin, so a version change rebuilds only that tool.
# Sourced by scripts/testenv; expects versions.sh and common.sh to be loaded.

# Bumped when the way tools are built changes, so cached builds of the old recipe are not reused.
TOOLS_RECIPE=2

# go_tool_dir NAME VERSION -> the cache directory of one tool build.
go_tool_dir() { echo "$TESTENV_TOOLS/$1-$2-r$TOOLS_RECIPE"; }

# install_go_module NAME VERSION PACKAGE [LDFLAGS [KEY]]: `go install` a main package that has
# no replace lines, cached under KEY (default VERSION; a build with other ldflags needs its own).
install_go_module() {
  local name=$1 version=$2 pkg=$3 ldflags=${4:-} dir
  dir=$(go_tool_dir "$name" "${5:-$version}")
  [ -x "$dir/bin/$name" ] && return 0
  log "building $name $version (cached in $dir)"
  mkdir -p "$dir/bin"
  GOBIN="$dir/bin.tmp" go install -ldflags "$ldflags" "$pkg@$version" || die "building $name $version failed"
  mv "$dir/bin.tmp/$name" "$dir/bin/$name" && rm -rf "$dir/bin.tmp"
}

# wrapper_module DIR MODULE VERSION: a small module of our own that requires MODULE, to build
# main packages of modules whose own go.mod uses replace lines (etcd, kubernetes), which
# `go install pkg@version` refuses.
wrapper_module() {
  local dir=$1 module=$2 version=$3
  mkdir -p "$dir/src"
  (cd "$dir/src" && rm -f go.mod go.sum && go mod init "umbrella.testenv/$(basename "$dir")" >/dev/null 2>&1 &&
    go mod edit -require="$module@$version")
}

build_etcd() {
  local dir
  dir=$(go_tool_dir etcd "$ETCD_VERSION")
  [ -x "$dir/bin/etcd" ] && return 0
  log "building etcd $ETCD_VERSION (cached in $dir)"
  wrapper_module "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" || die "etcd: go.mod setup failed"
  (cd "$dir/src" && printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go &&
    go mod tidy >/dev/null && go build -o "$dir/bin/etcd" go.etcd.io/etcd/server/v3) ||
    die "building etcd $ETCD_VERSION failed"
}

# Kubernetes' go.mod points every k8s.io staging module at ./staging; a module that requires
# k8s.io/kubernetes must pin each of them to the matching v0.X.Y release instead.
build_kubernetes() {
  local dir gomod staging
  dir=$(go_tool_dir kubernetes "$K8S_VERSION")
  [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/kubectl" ] &&
    [ -x "$dir/bin/kube-controller-manager" ] && [ -x "$dir/bin/kube-scheduler" ] && return 0
  log "building kubernetes $K8S_VERSION: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cached in $dir; about 5-10 minutes on 2 cores the first time)"
  wrapper_module "$dir" k8s.io/kubernetes "$K8S_VERSION" || die "kubernetes: go.mod setup failed"
  gomod=$(cd "$dir/src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [ -f "$gomod" ] || die "kubernetes: cannot download go.mod of k8s.io/kubernetes@$K8S_VERSION"
  staging="v0.${K8S_VERSION#v1.}"
  local m
  for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
    (cd "$dir/src" && go mod edit -replace="$m=$m@$staging")
  done
  (cd "$dir/src" && cat >tools.go <<'GO' && go mod tidy >/dev/null &&
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    # Without these the programs call themselves v0.0.0, which skews version checks.
    local v=${K8S_VERSION#v} ldflags="" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=${v%%.*} -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2)"
      ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    GOBIN= go build -ldflags "$ldflags" -o "$dir/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl) ||
    die "building kubernetes $K8S_VERSION failed"
}

# kwok only plays nodes and pods through "stages"; its module ships the usual ones as YAML.
# Node: become Ready and keep a status heartbeat; pod: Running/Ready at once, Succeeded when
# its containers are meant to finish (Jobs), gone when deleted; and the chaos stages, which make
# a pod labelled `pod-container-running-failed.stage.kwok.x-k8s.io: "true"` fail (tests use it).
install_kwok_stages() {
  local dir module
  dir=$(go_tool_dir kwok "$KWOK_VERSION")
  [ -s "$dir/stages-v2.yaml" ] && return 0
  module=$(cd "$TESTENV_TOOLS" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  [ -d "$module/kustomize/stage" ] || die "kwok: no stage definitions in the module at '$module'"
  local f
  for f in "$module"/kustomize/stage/node/fast/*.yaml "$module"/kustomize/stage/node/heartbeat/*.yaml \
    "$module"/kustomize/stage/pod/fast/*.yaml "$module"/kustomize/stage/pod/chaos/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    echo "---"
    cat "$f"
  done >"$dir/stages-v2.yaml.tmp" && mv "$dir/stages-v2.yaml.tmp" "$dir/stages-v2.yaml"
}

# helm's cache key: its version and the Kubernetes version built in.
helm_key() { echo "$HELM_VERSION-k$HELM_KUBE_VERSION"; }

build_all_tools() {
  # As helm's own release builds: without the Kubernetes version, `helm template` renders for
  # Kubernetes v1.20.0.
  local kube_major=${HELM_KUBE_VERSION%.*} kube_minor=${HELM_KUBE_VERSION#*.}
  install_go_module helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kube_major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kube_major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kube_minor" \
    "$(helm_key)"
  install_go_module kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  install_kwok_stages
  install_go_module actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint/cmd/actionlint
  # sops' go.mod has no replace lines, so a plain `go install` builds it.
  install_go_module sops "$SOPS_VERSION" github.com/getsops/sops/v3/cmd/sops
  install_go_module registry "$DISTRIBUTION_VERSION" github.com/distribution/distribution/v3/cmd/registry
  build_own_program token-server
  build_etcd
  build_kubernetes
}

# Programs of ours under scripts/ (test support, not the product): the token server of
# registry C (standard library only) and the benchmarks' parallel server-side-apply floor
# (client-go). Each build is cached under the hash of its source.
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# own_program_bin NAME -> where the build of scripts/NAME is cached.
own_program_bin() {
  local name=$1 hash
  hash=$(cat "$SCRIPTS_DIR/$name"/go.mod "$SCRIPTS_DIR/$name"/*.go | sha256sum | cut -c1-12)
  echo "$(go_tool_dir "$name" "$hash")/bin/$name"
}

build_own_program() {
  local name=$1 bin
  bin=$(own_program_bin "$name")
  [ -x "$bin" ] && return 0
  log "building $name (cached in $(dirname "$(dirname "$bin")"))"
  (cd "$SCRIPTS_DIR/$name" && go build -o "$bin" .) || die "building $name failed"
}

# build_carvel NAME VERSION: kbld or kapp, the tools umbrella is measured against (benchmarks
# only). The module proxy refuses to list their versions, so `go install pkg@version` fails
# on its deprecation check; a wrapper module that requires the exact version builds.
build_carvel() {
  local name=$1 version=$2 dir
  dir=$(go_tool_dir "$name" "$version")
  [ -x "$dir/bin/$name" ] && return 0
  log "building $name $version (cached in $dir)"
  wrapper_module "$dir" "carvel.dev/$name" "$version" || die "$name: go.mod setup failed"
  (cd "$dir/src" && printf 'package tools\n\nimport _ "carvel.dev/%s/cmd/%s"\n' "$name" "$name" >tools.go &&
    go mod tidy >/dev/null && go build -o "$dir/bin/$name" "carvel.dev/$name/cmd/$name") ||
    die "building $name $version failed"
}

# tools_path -> a PATH prefix holding every cached tool.
tools_path() {
  local p="" d
  for d in "$(go_tool_dir helm "$(helm_key)")" "$(go_tool_dir kwok "$KWOK_VERSION")" \
    "$(go_tool_dir actionlint "$ACTIONLINT_VERSION")" "$(go_tool_dir sops "$SOPS_VERSION")" \
    "$(go_tool_dir etcd "$ETCD_VERSION")" "$(go_tool_dir kubernetes "$K8S_VERSION")" "$(go_tool_dir kbld "$KBLD_VERSION")" "$(go_tool_dir kapp "$KAPP_VERSION")"; do
    p="$p${p:+:}$d/bin"
  done
  echo "$p"
}

# The programs tests and the demo call by name; `up` fails naming any missing from PATH.
# (kbld and kapp are built only by `bench-tools`, so they are not listed.)
ENV_TOOLS=(helm kwok kubectl kube-apiserver kube-controller-manager kube-scheduler etcd actionlint sops age age-keygen)

# check_tools: each of ENV_TOOLS is an executable on PATH (call after PATH has tools_path).
check_tools() {
  local t missing=()
  for t in "${ENV_TOOLS[@]}"; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] || die "missing from PATH after the build: ${missing[*]} (PATH=$PATH)"
}
