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
