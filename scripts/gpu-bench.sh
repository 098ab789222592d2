#!/usr/bin/env bash
# GPU benchmarks in one call to a lent machine that has a GPU, Python with torch + transformers,
# and no Rust toolchain or registry. Two halves:
#
#   scripts/gpu-bench.sh pack   here: build the release binary, strip and compress it into
#                               .gpubench/, and fetch the Vulkan loader's .deb into .gl/ (both
#                               gitignored; carry them to the machine)
#   scripts/gpu-bench.sh run    there: unpack, make Vulkan findable, run bench train / forward /
#                               masked-dw on wgpu beside PyTorch CUDA eager on the configs in
#                               assets/configs (random weights), write tables and JSON to $OUT
#   scripts/gpu-bench.sh diag   there, instead of run: where full fine-tuning's time goes on the
#                               largest config: the step at cubecl's default and at its extensive
#                               matmul autotuning, side by side, and one step with every kernel
#                               timed (cubecl's profiling log, one summary per device sync)
#
# Each bench has its own time limit so one slow model cannot eat the whole call; the limits sum
# to under 9 minutes (a call may run 10).
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=.gpubench

pack() {
    set -e
    local target=${CARGO_TARGET_DIR:-target}
    cargo build --release
    mkdir -p "$PACK" .gl
    strip -o "$PACK/greentrainer" "$target/release/greentrainer"
    xz -T0 -6 -f "$PACK/greentrainer"
    if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
        local lists=/tmp/gpu-bench-apt
        mkdir -p "$lists/partial"
        local o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
        apt-get $o update >/dev/null
        (cd .gl && apt-get $o download libvulkan1)
    fi
    du -ch "$PACK"/* .gl/* | tail -n 1
    echo 'now: run "bash scripts/gpu-bench.sh run" on the device with carry [".gpubench", ".gl"]'
}

# Unpacks the binary to $bin and makes the NVIDIA Vulkan driver findable.
prepare() {
    # The NVIDIA driver ships an ICD but the image may lack the loader that reads it.
    if ! ldconfig -p | grep -q libvulkan.so.1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
        export VK_DRIVER_FILES=$icd
    fi
    xz -dc "$PACK/greentrainer.xz" >"$bin" && chmod +x "$bin" || { echo "no packed binary: run pack first"; exit 1; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$logs/gpu.txt"
}

run() {
    # $OUT keeps the JSON rows and one archive of the logs (a device call returns at most 8 files).
    local out=${OUT:-runs/gpu-bench} logs=/tmp/gpu-bench-logs bin=/tmp/greentrainer
    mkdir -p "$out" "$logs"
    prepare

    # name, seconds, steps
    local models=("smollm2-135m 130 3" "qwen2.5-0.5b 140 3" "llama-3.2-1b 170 2")
    for entry in "${models[@]}"; do
        read -r name limit steps <<<"$entry"
        echo "== bench train $name (limit ${limit}s)"
        timeout "$limit" "$bin" bench train --on wgpu --random-init --model "assets/configs/$name" \
            --batch 4 --seq 256 --steps "$steps" --json "$out/train-$name.json" >"$logs/train-$name.md" 2>"$logs/train-$name.log"
        echo "exit $?"
        cat "$logs/train-$name.md"
        grep -E "skipped|error|panicked" "$logs/train-$name.log" | head -n 5
    done
    echo "== bench forward smollm2-135m"
    timeout 60 "$bin" bench forward --on wgpu --random-init --model assets/configs/smollm2-135m --batch 4 --seq 256 \
        >"$logs/forward.md" 2>"$logs/forward.log"
    echo "exit $?"
    cat "$logs/forward.md"
    echo "== bench masked-dw"
    timeout 40 "$bin" bench masked-dw --on wgpu --tokens 1024 >"$logs/masked-dw.md" 2>"$logs/masked-dw.log"
    echo "exit $?"
    cat "$logs/masked-dw.md"
    tar czf "$out/logs.tgz" -C "$logs" .
}

diag() {
    local out=${OUT:-runs/gpu-bench} logs=/tmp/gpu-bench-logs bin=/tmp/greentrainer
    local model=$PWD/assets/configs/llama-3.2-1b
    local common=(bench train --on wgpu --random-init --model "$model" --batch 4 --seq 256 --full-only)
    mkdir -p "$out" "$logs"
    prepare
    echo "== full fine-tuning, default autotuning, beside PyTorch"
    timeout 100 "$bin" "${common[@]}" --steps 3 --json "$out/diag-default.json" 2>"$logs/diag-default.log"
    echo "exit $?"
    echo "== full fine-tuning, extensive autotuning (no PyTorch row)"
    CUBECL_AUTOTUNE_LEVEL=extensive timeout 130 "$bin" "${common[@]}" --steps 3 --python /nonexistent \
        --json "$out/diag-extensive.json" 2>"$logs/diag-extensive.log"
    echo "exit $?"
    echo "== one step with every kernel timed"
    # cubecl reads cubecl.toml from the working folder; its environment switches would also log
    # every kernel's source. Timing each kernel serialises them: read the shares, not the total.
    local profiled=/tmp/gpu-bench-profiled
    mkdir -p "$profiled"
    printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' "$logs/kernels.log" >"$profiled/cubecl.toml"
    (cd "$profiled" && timeout 90 "$bin" "${common[@]}" --steps 1 --python /nonexistent \
        --json "$logs/diag-profiled.json" >"$logs/diag-profiled.md" 2>"$logs/diag-profiled.log")
    echo "exit $?"
    grep -h "s/step" "$logs"/diag-*.log
    tar czf "$out/logs.tgz" -C "$logs" .
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    diag) diag ;;
    *)
        echo "usage: scripts/gpu-bench.sh pack|run|diag" >&2
        exit 2
        ;;
esac
