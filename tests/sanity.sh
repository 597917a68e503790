#!/usr/bin/env bash
# ansible-test sanity needs a real copy at .../ansible_collections/k8s_ipsec/cni (not the symlink, not the repo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v shellcheck >/dev/null || { apt-get update -q && apt-get install -y -q shellcheck; } >/dev/null

# ansible-test keeps its venvs and caches under ~/.ansible/test: give it a home of its own inside the repo.
export HOME="$root/.cache/ansible-test-home"
cache="$HOME/.ansible/test/cache"
if [ ! -f "$cache/get_pip_24_2.py" ]; then
  # Its pip bootstrap is downloaded from a host these machines cannot reach: run pip 24.2 from PyPI's wheel instead.
  mkdir -p "$cache"
  "$root/.venv/bin/pip" download -q --no-deps -d "$cache" pip==24.2
  cat > "$cache/get_pip_24_2.py" <<'PY'
import glob, os, sys
sys.path.insert(0, glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-24.2-*.whl"))[0])
from pip._internal.cli.main import main
sys.exit(main(["install"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]))
PY
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/k8s_ipsec/cni"
mkdir -p "$dest"
# The tree as it would be committed (tracked and new files, minus ignored ones), without the collection symlink.
(cd "$root" && git ls-files -z --cached --others --exclude-standard | grep -zv '^collections/' |
  xargs -0 cp --parents -P -t "$dest")
cd "$dest"
"$root/.venv/bin/ansible-test" sanity --venv --python 3.11 --color no "$@"
