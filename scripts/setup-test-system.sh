#!/usr/bin/env bash
# Prepare a Debian machine for stepflow's tests against real servers: tmux, OpenSSH's sshd,
# podman serving the Docker Engine API, and a tiny busybox image (no registry is reachable).
# Idempotent and quick when everything is already there. Run as root (CI runs it before pytest).
#
# Environment:
#   STEPFLOW_TEST_STATE  state directory for containers.conf and sockets (default /tmp/stepflow-test-system)
#   STEPFLOW_TEST_IMAGE  tag of the busybox image (default localhost/stepflow-busybox:latest)
set -euo pipefail

STATE_DIR="${STEPFLOW_TEST_STATE:-/tmp/stepflow-test-system}"
IMAGE="${STEPFLOW_TEST_IMAGE:-localhost/stepflow-busybox:latest}"
PACKAGES=(tmux openssh-server openssh-client podman runc busybox-static)

log() { printf 'setup-test-system: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (apt-get, /run/sshd, rootful podman)"
    exit 1
fi

# --- packages -------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "packages already installed"
fi

# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd

# --- podman configuration -------------------------------------------------------------------
mkdir -p "$STATE_DIR"
CONF="$STATE_DIR/containers.conf"
conf_text='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$(printf '%s' "$conf_text")" ]]; then
    printf '%s' "$conf_text" >"$CONF"
    log "wrote $CONF"
fi
export CONTAINERS_CONF="$CONF"

# --- the busybox image ----------------------------------------------------------------------
if podman image exists "$IMAGE"; then
    log "image $IMAGE already present"
else
    log "building $IMAGE from busybox-static"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,tmp,etc,root,work,proc,sys,dev}
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $("$rootfs/bin/busybox" --list); do
        [[ -e "$rootfs/bin/$applet" ]] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    tar -C "$rootfs" -cf "$rootfs.tar" .
    podman import \
        --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'WORKDIR /' \
        --change 'CMD ["/bin/sh"]' \
        "$rootfs.tar" "$IMAGE" >/dev/null
    rm -f "$rootfs.tar"
    log "built $IMAGE"
fi

log "ready: CONTAINERS_CONF=$CONF image=$IMAGE"
