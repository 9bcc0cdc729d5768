#!/bin/bash
# Build lgf's container image without any image registry (`make image` runs `deploy/image.sh build`).
#
#   deploy/image.sh build       base from Debian packages (mmdebstrap -> podman import), then
#                               `podman build -f Containerfile`; prints the image name on its last line
#   deploy/image.sh name        the image name the current sources build (localhost/lgf:<hash>)
#   deploy/image.sh run-args    the podman flags this host needs to run containers (see below)
#
# Both steps are cached by content: the base is tagged localhost/lgf-base:<hash of suite, mirror and
# package list>, the image localhost/lgf:<hash of the base and every file that goes into it>; an image
# that exists is not built again (a rebuild after a source change takes ~15 s; a new base ~1-2 min,
# mostly downloading ~150 MB of Debian packages). Both also get the tag :latest.
#
# Environment: DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian), PYTHON (the
# python used to fetch wheels: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,python3-bpfcc,bpfcc-tools,ca-certificates
IMAGE_PYTHON=3.11   # bookworm's python3: the wheels fetched for the image must match it
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WORK=build/image

say() { echo "image: $*" >&2; }

# podman flags this host needs, beyond the defaults:
# - crun (podman's default runtime) refuses hosts whose cgroups are "hybrid" (v1 controllers plus a
#   cgroup2 mount at /sys/fs/cgroup/unified: "cgroups in hybrid mode not supported"); runc runs there.
# - without CAP_SYS_RESOURCE (e.g. lgf's own CI VMs) podman's default rlimits (nofile and nproc far
#   above the host's) cannot be set ("setrlimit RLIMIT_NOFILE: Operation not permitted"); ask for
#   what the host allows instead.
run_args() {
  local args=()
  if grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts && grep -q '^cgroup /sys/fs/cgroup/' /proc/mounts; then
    command -v runc >/dev/null || { say "this host has hybrid cgroups, which crun refuses: apt-get install runc" ; exit 1; }
    args+=(--runtime runc)
  fi
  local capeff; capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
  if (( (16#$capeff >> 24 & 1) == 0 )); then
    local nofile; nofile=$(ulimit -Hn)
    args+=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
  fi
  echo "${args[@]}"
}

ensure_tools() {
  local missing=()
  for pair in podman:podman mmdebstrap:mmdebstrap runc:runc; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if (( ${#missing[@]} )); then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# pip's notes about index locations a local pip.conf names but that do not exist are noise here.
quiet_pip() { grep -v "^WARNING: Location '" || true; }

hash_of() { sha256sum | cut -c1-12; }

base_name() {
  echo "localhost/lgf-base:$(printf '%s|%s|%s|%s' "$SUITE" "$MIRROR" "$BASE_PACKAGES" v1 | hash_of)"
}

image_name() {
  local files
  files=$(find core sources plugins sinks -type f \( -name '*.py' -o -name '*.c' -o -name '*.h' \
            -o -name '*.go' -o -name '*.mod' -o -name '*.toml' -o -name '*.css' -o -name '*.js' \) \
            -not -path '*/__pycache__/*' | LC_ALL=C sort)
  echo "localhost/lgf:$( { base_name; cat Containerfile pyproject.toml plugins.toml deploy/image.sh $files; } | hash_of)"
}

build_base() {
  local base; base=$(base_name)
  if podman image exists "$base"; then return; fi
  say "making the base $base from Debian $SUITE packages ($BASE_PACKAGES) with mmdebstrap"
  mkdir -p "$WORK"
  # Docs, man pages and locales are dropped: an agent image has no reader for them.
  mmdebstrap --quiet --variant=apt --include="$BASE_PACKAGES" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$SUITE" "$WORK/base.tar" "$MIRROR"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$WORK/base.tar" "$base" >/dev/null
  rm -f "$WORK/base.tar"
  podman tag "$base" localhost/lgf-base:latest
}

fetch_wheels() {
  rm -rf "$WORK/context" && mkdir -p "$WORK/context/wheels"
  "$PY" -m pip wheel -q --no-deps -w "$WORK/context/wheels" . 2> >(quiet_pip >&2) >/dev/null
  local deps
  # The dependencies and the `kubernetes` extra (the API client [kubernetes] reads pods through).
  deps=$("$PY" -c 'import tomllib; p = tomllib.load(open("pyproject.toml","rb"))["project"]; print(" ".join(p["dependencies"] + p["optional-dependencies"]["kubernetes"]))')
  # Binary wheels for the image's python, whatever python runs this script.
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --only-binary=:all: --python-version "$IMAGE_PYTHON" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$WORK/context/wheels" $deps 2> >(quiet_pip >&2) >/dev/null
  cp plugins.toml "$WORK/context/plugins.toml"
}

build() {
  ensure_tools
  local image; image=$(image_name)
  if podman image exists "$image"; then
    say "$image is up to date"
    echo "$image"
    return
  fi
  build_base
  fetch_wheels
  say "building $image"
  # shellcheck disable=SC2046
  podman build --quiet $(run_args) --network=none --build-arg "BASE=$(base_name)" \
    -f Containerfile -t "$image" "$WORK/context" >/dev/null
  podman tag "$image" localhost/lgf:latest
  # Older builds of the app layer are of no use once this one exists (the base stays cached).
  podman images --format '{{.Repository}}:{{.Tag}}' localhost/lgf | grep -v -x -e "$image" -e localhost/lgf:latest \
    | xargs -r podman rmi --force >/dev/null 2>&1 || true
  echo "$image"
}

case "${1:-build}" in
  build) build ;;
  name) image_name ;;
  run-args) run_args ;;
  *) echo "usage: $0 build|name|run-args" >&2; exit 2 ;;
esac
