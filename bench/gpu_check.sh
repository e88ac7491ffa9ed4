#!/usr/bin/env bash
# The device check (issue 14): on a machine with an NVIDIA GPU and a CUDA build of torch,
# runs each neural adapter on random weights of its real architecture and writes its
# figures to bench/results/gpu_check_<date>/:
#   wav2lip: streams per GPU, fps per stream, first-frame latency (bench/gpu_check.py)
#   xtts:    first streamed piece and real-time factor, full-size model (bench/xtts_speed.py)
# It stops at the first adapter that fails. Usage: bench/gpu_check.sh [cuda|cuda:N]
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda}"
py="${PYTHON:-.venv/bin/python}"
out="bench/results/gpu_check_$(date -u +%Y-%m-%d)"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 ORT_DISABLE_TELEMETRY=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
echo "== wav2lip on $device"
"$py" bench/gpu_check.py --device "$device" --json "$out/wav2lip.json"
if "$py" -c "import TTS" 2>/dev/null; then
  echo "== xtts on $device"
  "$py" bench/xtts_speed.py --device "$device" --threads 1 --repeat 3 --out "$out/xtts.json"
else
  echo "== xtts skipped: coqui-tts is not installed (pip install -e '.[xtts]')"
fi
echo "figures in $out/"
