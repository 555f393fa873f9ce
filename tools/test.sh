#!/usr/bin/env bash
# Run the whole test suite in a virtualenv of its own: lint, type check, then pytest.
# PYTHON picks the interpreter (default python3); each interpreter gets its own venv.
# Extra arguments go to pytest, e.g. tools/test.sh -k parser
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=.venv
if [ -n "${PYTHON:-}" ]; then venv=".venv-$version"; fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "== Python $version ($venv)"
if [ -z "${SKIP_LINT:-}" ]; then
  "$venv/bin/ruff" check src tests examples benchmarks tools fuzz
  "$venv/bin/ruff" format --check src tests examples benchmarks tools fuzz
  "$venv/bin/mypy"
  # The documentation site, built outside the repository; --strict makes warnings fatal.
  docs_site=$(mktemp -d)
  trap 'rm -rf "$docs_site"' EXIT
  "$venv/bin/mkdocs" build --strict --site-dir "$docs_site"
  rm -rf "$docs_site"
  trap - EXIT
fi
exec "$venv/bin/python" -m pytest "$@"
