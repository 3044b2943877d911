#!/usr/bin/env bash
# Builds .device/ in this checkout, on this machine (it needs PyPI; the GPU machine reaches
# nothing): what the lent GPU machine lacks, as pure-Python wheels (fvcore and its needs;
# pytest-xdist, execnet and pytest-timeout pinned, which pyproject's addopts and timeout name),
# the real Fashion-MNIST files, and .device/setup.sh, which installs the wheels offline into
# /tmp/site and exports PYTHONPATH and CNNBENCH_DATA there. pytest-benchmark and py-cpuinfo are
# not carried: the GPU image has them (the device tool's KINDS.md lists its packages), and an
# unpinned copy put first on PYTHONPATH would replace them with whatever PyPI had that day.
#
# Here, from the repository root:   bash benchmarks/prepare_gpu.sh
# Then the one call, on the GPU machine (device tool: carry [".device"], timeout_s 600), from the
# repository root (the device tool returns few files: the archive holds every output):
#   source .device/setup.sh && python3 benchmarks/gpu_acceptance.py --deadline 540 \
#       --out /tmp/acceptance --archive $OUT/acceptance.tar.gz; cp /tmp/acceptance/verdicts.* $OUT/
# (estimated 8 minutes on an H200; --deadline leaves out what would not fit, and the archive is
# rewritten after every stage, so a command cut short still returns the verdicts so far)
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dst=$root/.device
# .device/ must never be committed: .gitignore lists it; where it does not, exclude it locally
exclude=$(git -C "$root" rev-parse --git-path info/exclude)
git -C "$root" check-ignore -q .device/x || echo '/.device/' >> "$exclude"
rm -rf "$dst/wheels"
mkdir -p "$dst/wheels" "$dst/fashion-mnist"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps -d "$tmp" \
    fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor portalocker tabulate \
    pytest-xdist==3.8.0 execnet==2.1.2 pytest-timeout==2.4.0
# fvcore, iopath (and any other source archive) are built into pure-Python wheels here, so that
# nothing is built there
for f in "$tmp"/*.tar.gz; do
    [ -e "$f" ] || continue
    python3 -m pip wheel -q --no-deps -w "$dst/wheels" "$f"
done
cp "$tmp"/*.whl "$dst/wheels/" 2>/dev/null || true
for w in "$dst"/wheels/*.whl; do
    case "$w" in
        *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
        *) echo "not pure Python: $w" >&2; exit 1 ;;
    esac
done
data=/usr/share/datasets/fashion-mnist
[ -d "$data" ] || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
cp -n "$data"/*.gz "$dst/fashion-mnist/"
cat > "$dst/setup.sh" <<'SETUP'
# source me on the GPU machine, from the repository root
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .device/wheels/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export CNNBENCH_DATA=$PWD/.device/fashion-mnist
export PYTHONUNBUFFERED=1
SETUP
ls "$dst/wheels"
du -sh "$dst"
echo "ready: carry [\".device\"]; on the GPU machine:"
echo "  source .device/setup.sh && python3 benchmarks/gpu_acceptance.py --deadline 540 \\"
echo "      --out /tmp/acceptance --archive \$OUT/acceptance.tar.gz; cp /tmp/acceptance/verdicts.* \$OUT/"
