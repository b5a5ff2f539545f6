#!/bin/sh
# Refresh the vendored three.js build from the npm registry: ./update.sh [VERSION]
set -eu
cd "$(dirname "$0")"
version="${1:-0.187.0}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "three@$version" >/dev/null && tar xzf three-*.tgz)
cp "$tmp/package/build/three.module.js" "$tmp/package/build/three.core.js" .
cp "$tmp/package/LICENSE" LICENSE.three
echo "three.js $version vendored"
