#!/usr/bin/env bash
# The CUDA check of the training loop, in one go, for a machine with a GPU.
#
#   OUT=/tmp/gpu bash tests/benchmarks/gpu_check.sh
#
# Run from the repository root. Needs: torch with CUDA, torchvision, pluggy,
# click, tqdm, matplotlib, pytest, pytest-benchmark, hypothesis already
# installed (no internet is used), and the four Fashion-MNIST *-ubyte.gz files
# in .data/fashion-mnist (or $FMCLF_DATA). About 6 minutes; every step has a
# time limit and the whole script stops starting steps after 8 minutes.
#
# It installs fmclf (editable, no dependencies), trains with `fmclf run
# --device cuda` in several configurations (and once on this host's CPU),
# runs `pytest -m cuda`, times a comparison of 8 runs on the GPU as batched
# groups against the same runs one by one (`--no-batch`), times the `epoch`
# benchmarks (textbook pipeline vs fmclf engine vs hand-written loop, on the
# GPU and on the CPU), and writes every log under $OUT. Its figures go to one
# file, $OUT/summary.txt (per-epoch times and final accuracies of default /
# --no-cuda-graphs / --cuda-graphs at batch 256 and 4096 against the CPU's,
# the batched comparison against one by one, the benchmarks, the CUDA tests),
# printed last.

set -u
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT/runs"
PY=${PYTHON:-$(command -v python3 || command -v python)}
export FMCLF_DATA=${FMCLF_DATA:-$PWD/.data/fashion-mnist}
export FMCLF_REQUIRE_DATA=1
export XDG_CACHE_HOME=${XDG_CACHE_HOME_FOR_CHECK:-$(mktemp -d)}
export PYTHONDONTWRITEBYTECODE=1
RUNS=$(mktemp -d)
T0=$(date +%s)
DEADLINE=$((T0 + 480))
STATUS="$OUT/status.txt"
: > "$STATUS"

# step NAME LIMIT_SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        echo "$name: skipped (out of time)" | tee -a "$STATUS"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local start=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $(( $(date +%s) - start ))s$([ $rc -eq 124 ] && echo ' (TIMED OUT)')" | tee -a "$STATUS"
    tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
}

env_info() {
    nvidia-smi
    nproc
    ls -l "$FMCLF_DATA"
    "$PY" -c 'import sys, torch, torchvision
print(sys.version)
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU visible", "- cpu threads", torch.get_num_threads())'
}
env_info > "$OUT/env.log" 2>&1
tail -n 2 "$OUT/env.log"

# Editable install; without setuptools, an equivalent by hand: the two packages
# and the entry points the plugins are found through.
install_by_hand() {
    local site
    site=$(mktemp -d)
    ln -s "$PWD/fmclf" "$site/fmclf"
    ln -s "$PWD/plugins" "$site/fmclf_plugins"
    "$PY" - "$site" <<'EOF'
import configparser, pathlib, re, sys
site = pathlib.Path(sys.argv[1])
version = re.search(r'__version__ = "([^"]+)"', pathlib.Path("fmclf/__init__.py").read_text()).group(1)
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
info = site / f"fmclf-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fmclf\nVersion: {version}\n")
eps = cfg["options.entry_points"]
(info / "entry_points.txt").write_text("".join(f"[{group}]\n{eps[group].strip()}\n\n" for group in eps))
print("installed by hand into", site)
EOF
    echo "$site" > "$OUT/pythonpath.txt"
}
step install 120 "$PY" -m pip install --no-deps --no-build-isolation -e .
if ! "$PY" -c "import fmclf_plugins.softmax" 2>/dev/null; then
    install_by_hand >> "$OUT/install.log" 2>&1
    export PYTHONPATH="$(cat "$OUT/pythonpath.txt")${PYTHONPATH:+:$PYTHONPATH}"
    echo "install: fell back to an install by hand (see install.log)" | tee -a "$STATUS"
fi

# fmclf run, 10 epochs each; the run folders' metrics and summary are kept.
run() {
    local name=$1
    shift
    step "run-$name" 90 "$PY" -m fmclf run --epochs 10 --seed 0 --out "$RUNS/$name" "$@"
    mkdir -p "$OUT/runs/$name"
    cp "$RUNS/$name"/{summary.json,metrics.jsonl,config.toml} "$OUT/runs/$name/" 2>/dev/null
}
# The three CUDA-graph settings side by side (default: on where the parts allow, falling back to eager with
# a note when a capture fails; --no-cuda-graphs: eager; --cuda-graphs: on, or an error), at batch 256 and 4096,
# each against the CPU at the same batch size (the summary's last columns).
run cuda-first-load --device cuda --visualizer none   # decompresses and caches the data
run cuda-b256-default --device cuda --visualizer none
run cuda-b256-no-graphs --device cuda --visualizer none --no-cuda-graphs
run cuda-b256-graphs --device cuda --visualizer none --cuda-graphs
run cpu-b256 --device cpu --visualizer none
run cuda-b4096-default --device cuda --visualizer none --batch-size 4096
run cuda-b4096-no-graphs --device cuda --visualizer none --batch-size 4096 --no-cuda-graphs
run cuda-b4096-graphs --device cuda --visualizer none --batch-size 4096 --cuda-graphs
run cpu-b4096 --device cpu --visualizer none --batch-size 4096
run cuda-tqdm --device cuda                           # the default visualizer (tqdm, or lines when not a terminal)
run cuda-naive --device cuda --visualizer none --loss naive
run cuda-nn-torch-sgd --device cuda --visualizer none --model nn --updater torch-sgd   # graphs off, with a note

# The epoch benchmarks, GPU first (what only this machine can measure), then its CPU.
bench() {
    step "bench-$1" "$2" "$PY" -m pytest tests/benchmarks/test_epoch.py -k "$1" -p no:cacheprovider -q \
        --benchmark-enable --benchmark-only --benchmark-columns=min,median,rounds --benchmark-json="$OUT/bench-$1.json"
}
bench cuda 150
step pytest-cuda 150 "$PY" -m pytest -m cuda -p no:cacheprovider -q -rs --junitxml="$OUT/pytest-cuda.xml" tests
# the choices and the fallbacks of failed captures and replays, simulated (they need no GPU)
step pytest-graph-choices 90 "$PY" -m pytest -p no:cacheprovider -q tests/core/test_graph_choices.py
# A batched group on the GPU: 2 rates x 4 seeds, runs that differ only in rate and seed, so one group of 8
# runs trained as one computation, against the same 8 runs one by one; the summary gives both wall
# times and whether every run finished.
compare() {
    local name=$1
    shift
    step "compare-$name" "$1" "$PY" -m fmclf compare --lr 0.1 --lr 0.3 --seeds 4 --epochs 3 --device cuda \
        --visualizer none --jobs 1 --out "$RUNS/compare-$name" "${@:2}"
    cp "$RUNS/compare-$name/compare.json" "$OUT/compare-$name.json" 2>/dev/null
}
compare batched 120
compare one-by-one 150 --no-batch
bench cpu 120
step table 30 "$PY" tests/benchmarks/table.py "$OUT/bench-cuda.json" "$OUT/bench-cpu.json"

"$PY" - "$OUT" <<'EOF' > "$OUT/summary.txt" 2>&1
import json, math, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
print("fmclf run, 10 epochs (steady = median epoch time of epochs 2-10, train + test, without the per-epoch checkpoint;")
print("x cpu and acc - cpu: against the CPU run at the same batch size; graphs: what the run's log says about them):")
print(f"  {'run':<22}{'device':<9}{'steady s/epoch':>15}{'epoch 1 s':>11}{'wall s':>8}{'test acc':>9}{'x cpu':>8}"
      f"{'acc - cpu':>10}  peak memory; graphs")
found = {}
for folder in sorted((out / "runs").iterdir()):
    try:
        summary = json.loads((folder / "summary.json").read_text())
        epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        continue
    found[folder.name] = (summary, epochs, statistics.median(e["seconds"] for e in epochs[1:]) if len(epochs) > 1
                          else float("nan"))
for folder in sorted((out / "runs").iterdir()):
    if folder.name not in found:
        print(f"  {folder.name:<22}FAILED (see run-{folder.name}.log)")
        continue
    summary, epochs, steady = found[folder.name]
    batch = "b4096" if "b4096" in folder.name else "b256"
    cpu = found.get(f"cpu-{batch}")
    ratio = f"{steady / cpu[2]:8.3f}" if cpu and cpu[2] else f"{'-':>8}"
    dacc = f"{summary['test_acc'] - cpu[0]['test_acc']:+10.4f}" if cpu else f"{'-':>10}"
    log = out / f"run-{folder.name}.log"
    said = log.read_text(errors="replace") if log.exists() else ""
    graphs = "fell back: " + said.split("CUDA graphs are off for this run: ", 1)[1].split(";")[0][:80] \
        if "CUDA graphs are off" in said else "-"
    mem = summary.get("peak_memory", {})
    print(f"  {folder.name:<22}{summary['device']:<9}{steady:>15.4f}{epochs[0]['seconds']:>11.3f}{summary['seconds']:>8.2f}"
          f"{summary['test_acc']:>9.4f}{ratio}{dacc}  {mem.get('peak_rss_mb', '?')} MB host, "
          f"{mem.get('peak_cuda_mb', '-')} MB GPU; {graphs}")
for bench in (out / "bench-cuda.json", out / "bench-cpu.json"):
    try:
        data = json.loads(bench.read_text())
    except (OSError, ValueError):
        print(f"\n{bench.name}: no results (see {bench.stem}.log)")
        continue
    print(f"\n{bench.stem} (one epoch = train + test; fastest round; ratio to the textbook pipeline on the same device):")
    best, baseline = {}, {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if not str(b.get("group")).startswith("epoch"):
            continue
        best[(info.get("device"), info.get("label"))] = (b["stats"]["min"], info.get("overhead_vs_hand_interleaved"))
        if info.get("baseline"):
            baseline[info.get("device")] = b["stats"]["min"]
    for (device, label), (t, extra) in sorted(best.items(), key=lambda kv: -kv[1][0]):
        base = baseline.get(device)
        print(f"  {device!s:<5} {label!s:<30} {t * 1e3:9.1f} ms" + (f"  {base / t:7.1f}x textbook" if base else "")
              + (f"  overhead vs hand loop (interleaved) {extra:+.1%}" if extra is not None else ""))
    m = data.get("machine_info", {})
    print(f"  machine: {m.get('cpu', {}).get('brand_raw')} ({m.get('cpu', {}).get('count')} cores), {m.get('cuda_device')}, torch {m.get('torch')} ({m.get('torch_threads')} threads)")
steps = {}
for line in (out / "status.txt").read_text().splitlines():
    name, _, rest = line.partition(": ")
    if rest.startswith("rc="):
        rc, _, took = rest[3:].partition(" in ")
        steps[name] = (int(rc), float(took.split("s")[0]))
print("\nfmclf compare --lr 0.1 --lr 0.3 --seeds 4 --epochs 3 --device cuda (8 runs; wall time of the whole command):")
times = {}
for name in ("batched", "one-by-one"):
    rc, took = steps.get(f"compare-{name}", (None, float("nan")))
    try:
        rows = json.loads((out / f"compare-{name}.json").read_text())["rows"]
        accs = ", ".join(f"lr {r['lr']}: {r['metrics']['test_acc']['mean']:.4f}" for r in rows)
        runs = (f"{sum(len(r['seeds']) for r in rows)} runs finished, {sum(r['failed'] for r in rows)} failed; "
                f"mean test acc {accs}")
    except (OSError, ValueError, KeyError, TypeError):
        runs = f"no usable compare.json (see compare-{name}.log)"
    times[name] = took if rc == 0 else float("nan")
    print(f"  {name:<11} rc={rc} {took:7.1f} s  {runs}")
if all(math.isfinite(t) and t > 0 for t in times.values()):
    print(f"  batched: {times['one-by-one'] / times['batched']:.2f}x faster than one by one")
xml = out / "pytest-cuda.xml"
if xml.exists():
    import xml.etree.ElementTree as ET
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    print(f"\npytest -m cuda: {suite.get('tests')} tests, {suite.get('failures')} failed, {suite.get('errors')} errors, {suite.get('skipped')} skipped")
EOF
echo
echo "== steps"
cat "$STATUS"
echo
cat "$OUT/summary.txt"
echo "(logs under $OUT; total $(( $(date +%s) - T0 ))s)"
