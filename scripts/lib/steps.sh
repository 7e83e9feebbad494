# Named, timed steps for the make targets: a failing step is named, and a table of the steps'
# durations closes the run.

# Tools a fresh shell may not have on PATH yet (rustup's cargo, the Go toolchain).
for dir in "$HOME/.cargo/bin" /usr/local/go/bin; do
  [ -d "$dir" ] && case ":$PATH:" in *":$dir:"*) ;; *) PATH="$dir:$PATH" ;; esac
done
export PATH

STEP_NAMES=()
STEP_TIMES=()

step() {
  local name=$1 start=$SECONDS
  shift
  printf '\n==> %s\n' "$name"
  if ! "$@"; then
    STEP_NAMES+=("$name (FAILED)")
    STEP_TIMES+=($((SECONDS - start)))
    print_step_times
    exit 1
  fi
  STEP_NAMES+=("$name")
  STEP_TIMES+=($((SECONDS - start)))
}

print_step_times() {
  local i name width=4
  for name in "${STEP_NAMES[@]}"; do ((${#name} > width)) && width=${#name}; done
  printf '\n%-*s %8s\n' "$width" "step" "seconds"
  for i in "${!STEP_NAMES[@]}"; do printf '%-*s %8s\n' "$width" "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}"; done
}

# Refuses to start a build on a nearly full disk: a linker that runs out of space mid-write dies
# with SIGBUS ("ld terminated with signal 7"), which names nothing useful.
require_free_disk() {
  local need_gib=$1 dir=${2:-.} free_kib
  free_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  if ((free_kib < need_gib * 1024 * 1024)); then
    printf 'error: %s GiB free on the disk holding %s; the build and tests need %s GiB\n' \
      "$((free_kib / 1024 / 1024))" "$(cd "$dir" && pwd)" "$need_gib" >&2
    return 1
  fi
}
