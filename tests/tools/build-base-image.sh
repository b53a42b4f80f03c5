#!/usr/bin/env bash
# Builds (once) a local stand-in for the Dockerfile's base image, python:3.11-slim-bookworm, and
# prints its name: localhost/eveflow-test-base:<hash of this script and of the host's CA bundle>.
#
# Why it exists: the test machines and CI reach Debian's packages and PyPI but no container
# registry, so the real base cannot be pulled. Debian bookworm + CPython 3.11 is what that image
# is, and debootstrap makes the same from Debian's packages; the suite then builds the real
# Dockerfile on it with `buildah bud --build-arg PYTHON_IMAGE=<this image>` (tests/tools/build-image.sh).
#
# How it differs from the real base (none of it changes what the Dockerfile does):
# - CPython is Debian's python3.11 (3.11.2 + Debian patches) in /usr/bin, linked from
#   /usr/local/bin/python3.11 and /usr/local/bin/python3, where the official image installs its own
#   build; pip is Debian's python3-pip (/usr/local/bin/pip links to it) and Debian's
#   EXTERNALLY-MANAGED marker is removed so `pip install` behaves as in the official image.
# - python3-venv and ca-certificates come along (the official image has venv built in).
# - The host's CA bundle replaces the image's (/etc/ssl/certs/ca-certificates.crt) and
#   SSL_CERT_FILE points at it: this machine reaches PyPI through an egress proxy with its own CA,
#   and uv does not read the system store unless SSL_CERT_FILE says where it is. The official image
#   keeps Debian's bundle and sets no SSL_CERT_FILE.
# - No PYTHON_VERSION/GPG_KEY variables; LANG=C.UTF-8 and PATH as in the official image.
#
# The Debian mirror is the one this machine's apt uses (read from /etc/apt/sources.list*).
# Needs root, debootstrap and buildah (vfs storage, no daemon). Cached: an image of the same name
# is reused, so a second run takes well under a second; EVEFLOW_REBUILD_BASE=1 forces a rebuild.
set -euo pipefail

storage=(--storage-driver "${STORAGE_DRIVER:-vfs}")
host_ca=/etc/ssl/certs/ca-certificates.crt
key=$(cat "$0" "$host_ca" | sha256sum | cut -c1-12)
image="localhost/eveflow-test-base:$key"

if [ -z "${EVEFLOW_REBUILD_BASE:-}" ] && buildah "${storage[@]}" inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

# The first "deb" mirror of this machine's apt sources, one-line or deb822 format.
mirror=$( { cat /etc/apt/sources.list 2>/dev/null || true
            cat /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
          | awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | awk '/^URIs:/ && !/security/ { print $2; exit }')
fi
if [ -z "$mirror" ]; then
  echo "build-base-image: no Debian mirror in /etc/apt/sources.list*; add one (deb URL bookworm main)" >&2
  exit 1
fi

ctr=$(buildah "${storage[@]}" from scratch)
trap 'buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah "${storage[@]}" mount "$ctr")

debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >&2

# The official image's layout: the interpreter and pip in /usr/local/bin.
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3.11"
ln -sf python3.11 "$root/usr/local/bin/python3"
ln -sf python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip3"
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
cp "$host_ca" "$root/etc/ssl/certs/ca-certificates.crt"
# A slim image: no package lists, apt archives or docs (as the official image).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/root/.cache

buildah "${storage[@]}" umount "$ctr" >/dev/null
buildah "${storage[@]}" config \
  --os linux --arch amd64 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --cmd python3 \
  --label org.opencontainers.image.description="eveflow test stand-in for python:3.11-slim-bookworm (debootstrap)" \
  "$ctr"
buildah "${storage[@]}" commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
echo "$image"
