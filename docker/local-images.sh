#!/usr/bin/env bash
# Build the images docker-compose.yml runs, from Debian's packages and this machine's own Python
# environment, on a machine that reaches no image registry. Nothing is downloaded but Debian packages;
# torch, torchvision and every other dependency come from the virtual environment given (default:
# the project's .venv), so they reach the image without a download.
#
#   docker/local-images.sh [VENV]        # then: docker compose -f docker-compose.yml -f docker/local-images.yml up
#
# Images (each built only when missing or when what it is made of changed; the engine is the cache):
#   convscope/debian-python:bookworm   minimal Debian with Python 3.11 (mmdebstrap, docker import)
#   convscope/postgres:local           Debian's PostgreSQL 15 behind the official image's entrypoint contract
#   convscope/deps:<hash>              /opt/venv holding VENV's packages (hash of their list)
#   convscope:local                    the project's Dockerfile on top of convscope/deps
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$REPO/.venv}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PY=python3.11
SITE="$VENV/lib/$PY/site-packages"
say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { docker image inspect "$1" > /dev/null 2>&1; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }
quiet() { local out; out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }; }  # its output only if it fails

[ -d "$SITE" ] || { echo "local-images.sh: $SITE: no such folder; give the virtual environment to copy" >&2; exit 2; }
command -v mmdebstrap > /dev/null || { echo "local-images.sh: needs mmdebstrap (apt-get install -y mmdebstrap)" >&2; exit 2; }

rootfs_image() {  # rootfs_image TAG PACKAGES: a minimal Debian with PACKAGES, imported as TAG
  local tag=$1 packages=$2 start
  start=$(date +%s)
  mmdebstrap --quiet --variant=minbase --include="$packages" "$SUITE" - "$MIRROR" \
    | docker import -c 'ENV LANG=C.UTF-8' - "$tag" > /dev/null
  say "built $tag ($(elapsed "$start"))"
}

have convscope/debian-python:$SUITE || rootfs_image convscope/debian-python:$SUITE python3,python3-venv,ca-certificates,libgomp1

if ! have convscope/postgres:local; then
  have convscope/debian-postgres:$SUITE || rootfs_image convscope/debian-postgres:$SUITE postgresql,gosu
  start=$(date +%s)
  quiet docker build -t convscope/postgres:local -f "$REPO/docker/local/postgres.Dockerfile" "$REPO/docker/local"
  say "built convscope/postgres:local ($(elapsed "$start"))"
fi

# The dependencies: VENV's site-packages minus the project itself (an editable install points at this
# checkout), in a venv at /opt/venv; its console scripts are copied with their first line pointed there.
key=$(cd "$SITE" && ls -1d *.dist-info | grep -v '^convscope-' | sha256sum | cut -c1-16)
DEPS=convscope/deps:$key
if ! have "$DEPS"; then
  start=$(date +%s)
  container=$(docker create -v "$SITE:/host/site:ro" -v "$VENV/bin:/host/bin:ro" convscope/debian-python:$SUITE sh -ec "
    python3 -m venv --without-pip /opt/venv
    cp -a /host/site/. /opt/venv/lib/$PY/site-packages/
    rm -rf /opt/venv/lib/$PY/site-packages/__editable__*convscope* /opt/venv/lib/$PY/site-packages/convscope-*.dist-info
    for script in /host/bin/*; do
      case \$(basename \$script) in python*|activate*|Activate*|convscope) continue ;; esac
      [ -f \$script ] && head -c 2 \$script | grep -q '#!' || continue
      { echo '#!/opt/venv/bin/python'; tail -n +2 \$script; } > /opt/venv/bin/\$(basename \$script)
      chmod 755 /opt/venv/bin/\$(basename \$script)
    done
    /opt/venv/bin/python -c 'import torch, torchvision, mlflow, optuna, tensorboard'")
  docker start --attach "$container" > /dev/null
  docker commit --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' "$container" "$DEPS" > /dev/null
  docker rm "$container" > /dev/null
  say "built $DEPS ($(elapsed "$start"))"
fi

# The project: the file users build, on the local base; pip finds every dependency already installed.
start=$(date +%s)
quiet docker build --build-arg BASE_IMAGE="$DEPS" --build-arg PIP_FLAGS="--no-index --no-build-isolation --no-deps" \
  -t convscope:local "$REPO"
say "built convscope:local on $DEPS ($(elapsed "$start"))"
