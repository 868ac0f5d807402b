# Put the toolkit's venv first on PATH (the `asr` command and its Python).
recipe_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$recipe_root/../.." && pwd)
if [ -x "$repo_root/.venv/bin/python" ]; then
  export PATH="$repo_root/.venv/bin:$PATH"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C
