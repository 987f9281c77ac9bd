#!/bin/sh
# Fill deploy/wheelhouse/ with every wheel the images need, on a host that reaches PyPI, for an
# image build that fetches nothing (--build-arg WHEELHOUSE_ONLY=true: pip install --no-index
# --find-links). `pip wheel` also builds the few sdist-only dependencies into wheels, so the image
# never compiles. Extras: cloud (Dockerfile), edge (Dockerfile.edge), local (the Tansu binary of
# tansu.Dockerfile); plus the project's build requirements (setuptools, wheel).
# The host's Python must match the images' (3.11, x86_64 manylinux). ~1.1 GB, mostly TensorFlow.
#   deploy/local-images/make-wheelhouse.sh [pip wheel options...]
# Skipped when the wheelhouse was made from this pyproject.toml already (stamp file in .tools/, outside
# the build context, so the stamp itself never invalidates an image layer); FORCE=1 redoes it.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/deploy/wheelhouse"
py=${PYTHON:-python3}
mkdir -p "$root/.tools"
stamp="$root/.tools/wheelhouse-made-from-pyproject-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ -f "$stamp" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "make-wheelhouse: $out is up to date with pyproject.toml ($(basename "$stamp"))"
  exit 0
fi
"$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "make-wheelhouse: needs Python 3.11 (the images run 3.11)")'
cd "$root"
"$py" -m pip wheel --quiet --wheel-dir "$out" ".[cloud,edge,local]" "setuptools>=68" wheel "$@"
# The project's own wheel: the images install the project from its source (COPY pipeline/).
rm -f "$out"/edge_vision_pipeline-*.whl "$root"/.tools/wheelhouse-made-from-pyproject-*
touch "$stamp"
echo "make-wheelhouse: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1) in $out"
