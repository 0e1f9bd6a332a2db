#!/usr/bin/env bash
# Build and test PocketSAMKit (ios_demo/PocketSAMKit) on Linux with Debian 13's Swift 6.0 toolchain (`swiftlang`:
# swiftc, SwiftPM, Foundation, XCTest), inside a Debian 13 (trixie) root made with debootstrap, since the host
# (Debian 12) ships no Swift. The root is built once (~2-3 minutes, 2.5 GB) and kept; later runs reuse it.
#
#   ios_demo/run-linux-tests.sh              build the root if absent, then `swift test` against tests/golden
#   ios_demo/run-linux-tests.sh --setup      only build the root (what .ci/run does)
#   ios_demo/run-linux-tests.sh --check      exit 0 when the root is ready, else 3 with the reason on stderr
#
# Needs root (debootstrap, chroot, bind mounts in a private mount namespace: nothing stays mounted).
# Environment:
#   POCKETSAM_SWIFT_ROOT   where the root lives (default /var/cache/pocketsam/swift-trixie)
#   POCKETSAM_DEBIAN_MIRROR  the Debian mirror for the root (default: the one the host's apt uses for Debian)
#   POCKETSAM_MASK_IOU     the mask IoU bound (pytest passes the parity table's; else read from it here)
#   POCKETSAM_PYTHON       the Python with pocketsam, numpy and pillow (default python3)
#   POCKETSAM_SWIFT_WORK   a folder the tests read and write (default: a temporary one), seen as /mnt/work:
#       golden-npy/   the goldens as .npy (ios_demo/prepare_goldens.py; made here when absent)
#       downscale.npy + downscale.sha256   optional: an image larger than 1024 and the sha256 of PIL's resize of it
#       bundles/*/    optional: bundles `pocketsam export` wrote, read by the Swift bundle reader
#       out/          what the tests write: apple-bench.json (bench rows), mask-*.png
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
root="${POCKETSAM_SWIFT_ROOT:-/var/cache/pocketsam/swift-trixie}"
suite=trixie

# The marker is written last, after swiftlang and libc6-dev installed (links inside the root are absolute: they
# point into the host from outside the chroot, so the marker is what is checked).
ready() { [ -f "$root/.pocketsam-ready" ] && [ -d "$root/usr/libexec/swift/bin" ]; }

mirror() {
    if [ -n "${POCKETSAM_DEBIAN_MIRROR:-}" ]; then echo "$POCKETSAM_DEBIAN_MIRROR"; return; fi
    # the URI the host's apt already uses for Debian's main archive (e.g. ".../debian/" for bookworm main)
    local codename
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(COMPONENT) $(IDENTIFIER)' 2>/dev/null \
        | awk -v c="$codename" '$2 == c && $3 == "main" && $4 == "Packages" { print $1; exit }'
}

setup() {
    if ready; then echo "Swift root ready: $root"; return; fi
    [ "$(id -u)" = 0 ] || { echo "building the Swift root needs root (debootstrap, chroot)" >&2; exit 3; }
    if ! command -v debootstrap >/dev/null; then
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap \
            || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap)) >/dev/null \
            || { echo "debootstrap could not be installed (apt-get install debootstrap)" >&2; exit 4; }
    fi
    local partial="$root.partial" m
    m="$(mirror)"
    rm -rf "$partial"
    mkdir -p "$(dirname "$root")"
    echo "building the Debian 13 root with swiftlang in $root (debootstrap $suite ${m:-default mirror}) ..."
    local t0=$SECONDS
    # minbase, then swiftlang and libc6-dev (the C runtime objects and headers swiftc links with: gcc only
    # recommends them, and --no-install-recommends keeps out the rest of the recommends)
    debootstrap --variant=minbase "$suite" "$partial" ${m:+"$m"} >"$partial.log" 2>&1 \
        || { tail -20 "$partial.log" >&2; echo "debootstrap failed (log: $partial.log)" >&2; exit 4; }
    cp /etc/resolv.conf "$partial/etc/resolv.conf" 2>/dev/null || true
    unshare --mount --propagation private bash -c '
        set -e
        mount -t proc proc "$1/proc"
        mount --rbind /dev "$1/dev"
        chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends swiftlang libc6-dev >/dev/null && apt-get clean"
    ' _ "$partial" >>"$partial.log" 2>&1 \
        || { tail -20 "$partial.log" >&2; echo "installing swiftlang failed (log: $partial.log)" >&2; exit 4; }
    rm -rf "$partial/var/lib/apt/lists/"*
    touch "$partial/.pocketsam-ready"
    rm -rf "$root"
    mv "$partial" "$root"
    rm -f "$partial.log"
    echo "Swift root ready in $((SECONDS - t0)) s: swiftlang $(chroot "$root" dpkg-query -W -f='${Version}' swiftlang)"
}

case "${1:-}" in
    --setup) setup; exit 0 ;;
    --check)
        ready || { echo "no Swift root at $root: run ios_demo/run-linux-tests.sh --setup (as root; .ci/run does)" >&2; exit 3; }
        exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--setup | --check]" >&2; exit 2 ;;
esac

setup
python="${POCKETSAM_PYTHON:-python3}"
bound="${POCKETSAM_MASK_IOU:-$(cd "$repo" && "$python" -c 'from pocketsam.runtime.parity import checks_for
print(next(c.bound for c in checks_for("e2e", "fp32") if c.metric == "mask_iou"))')}"
work="${POCKETSAM_SWIFT_WORK:-}"
if [ -z "$work" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
work="$(cd "$work" && pwd)"
mkdir -p "$work/out"
[ -d "$work/golden-npy" ] || "$python" "$here/prepare_goldens.py" "$work/golden-npy"
# Inside the root: the repo at /mnt/repo (tests/golden read in place), the work folder at /mnt/work. The build
# folder stays in the root (incremental builds between runs), never in the work tree. Release build (-O, as the
# app ships; Swift's -O keeps IEEE arithmetic and overflow checks): the golden tests take ~2 s instead of ~60 s.
unshare --mount --propagation private bash -c '
    set -e
    root="$1"; repo="$2"; work="$3"
    shift 3
    mkdir -p "$root/mnt/repo" "$root/mnt/work" "$root/var/cache/pocketsam-build"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$repo" "$root/mnt/repo"
    mount --bind "$work" "$root/mnt/work"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root "$@" \
        sh -c "cd /mnt/repo/ios_demo/PocketSAMKit && swift test -c release --scratch-path /var/cache/pocketsam-build 2>&1"
' _ "$root" "$repo" "$work" \
    POCKETSAM_GOLDEN=/mnt/repo/tests/golden POCKETSAM_WORK=/mnt/work POCKETSAM_MASK_IOU="$bound"
