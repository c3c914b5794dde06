#!/usr/bin/env bash
# Fail early and clearly when python3 is older than 3.12 (chaostoolkit-lib 1.45 needs it).
# On pyenv machines the repo's .python-version ("3.12") selects the right interpreter.
set -euo pipefail
if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
  echo "error: python3 is $(python3 --version 2>&1 || echo missing); chaosemergence needs Python >= 3.12." >&2
  echo "       With pyenv: 'pyenv install 3.12' (the repo's .python-version selects it)." >&2
  exit 1
fi
