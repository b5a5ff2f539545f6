#!/bin/sh
# Refresh the vendored three.js build and the few example modules the client imports (GLTFLoader and
# what it imports) from the npm registry: ./update.sh [VERSION]
set -eu
cd "$(dirname "$0")"
version="${1:-0.187.0}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "three@$version" >/dev/null && tar xzf three-*.tgz)
cp "$tmp/package/build/three.module.js" "$tmp/package/build/three.core.js" .
mkdir -p jsm/loaders jsm/utils
cp "$tmp/package/examples/jsm/loaders/GLTFLoader.js" jsm/loaders/
cp "$tmp/package/examples/jsm/utils/BufferGeometryUtils.js" "$tmp/package/examples/jsm/utils/SkeletonUtils.js" jsm/utils/
cp "$tmp/package/LICENSE" LICENSE.three
echo "three.js $version vendored (build + GLTFLoader)"
