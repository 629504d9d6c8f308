#!/usr/bin/env bash
# The MONAI Label step of CI: build (or reuse) a separate MONAI Label environment, .venv-monailabel/, and run
# tests/apps there with monailabel required (a skipped or failing test module fails this script).
#
# Why a separate environment: monailabel 0.8.5's own requirements force numpy < 2, pull ~160 packages and build
# sam2 against a CUDA PyTorch; the project's .venv must not see any of that. Here monailabel is installed with
# --no-deps next to the packages it really imports (requirements-monailabel.txt), under constraints.txt
# (torch 2.13.0 CPU, numpy 2). See docs/monailabel.md for the same steps by hand, on CPU and on CUDA machines.
#
# torchvision: monailabel imports `torchvision.utils` at module level (transform/post.py, deepedit), for 2D
# debug pictures only. The torchvision wheels reachable here are CUDA builds that fail to load against the CPU
# torch ("operator torchvision::nms does not exist"), and an unconstrained `pip install torchvision` replaces
# torch by a multi-GB CUDA build. So this CPU test environment gets a minimal stand-in package `torchvision`
# whose make_grid/save_image raise when called. It is written into the environment only, never shipped.
#
# Usage: bash .ci/monailabel.sh [extra pytest args]     (from anywhere; ~80 s to build, reused afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-monailabel
PY=$VENV/bin/python
# rebuild when an input of the environment changes (or the repository moved: a venv holds absolute paths)
KEY=$( (cat constraints.txt requirements-monailabel.txt setup.py; sed -n '/^# >>> build/,/^# <<< build/p' "$0"; pwd) \
      | sha256sum | cut -c1-16)
STAMP=$VENV/.installed-$KEY

# >>> build
pip_install() {  # quiet pip; drops the "Location ... is ignored" lines of local index mirrors, keeps real errors
    "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

build_env() {
    local t0=$SECONDS
    echo "monailabel.sh: building $VENV (about 80 s) ..."
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    pip_install -c constraints.txt torch==2.13.0
    pip_install -c constraints.txt -e ".[test]"
    pip_install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1
    echo "monailabel.sh: pip will report monailabel's declared requirements (numpy<2, sam2, ...) as unmet: expected"
    pip_install -c constraints.txt -r requirements-monailabel.txt
    if ! "$PY" -c "import torchvision.utils" 2>/dev/null; then
        local site
        site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        mkdir -p "$site/torchvision"
        cat > "$site/torchvision/__init__.py" <<'PYEOF'
"""Stand-in for torchvision in the CPU-only MONAI Label test environment of monai_dwp (.ci/monailabel.sh).

monailabel imports torchvision.utils at module level for 2D debug pictures only; the reachable torchvision wheels
are CUDA builds that do not load against the CPU build of torch.
"""
__version__ = "0.0.0+monai_dwp.stand_in"
PYEOF
        cat > "$site/torchvision/utils.py" <<'PYEOF'
"""make_grid / save_image of the torchvision stand-in: they raise, naming the fix."""


def _unavailable(*args, **kwargs):
    raise RuntimeError(
        "torchvision is a stand-in in this environment (.ci/monailabel.sh); install the torchvision build that "
        "matches your torch to use make_grid/save_image."
    )


make_grid = save_image = _unavailable
PYEOF
    fi
    "$PY" -c "import monailabel, monai_dwp; from monailabel.interfaces.app import MONAILabelApp" >/dev/null
    touch "$STAMP"
    echo "monailabel.sh: $VENV built in $((SECONDS - t0)) s"
}
# <<< build

if [[ -f $STAMP ]]; then
    echo "monailabel.sh: reusing $VENV"
else
    build_env
fi

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/monai_dwp_monailabel.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export TMPDIR=$SCRATCH                      # MONAI Label writes its result files to the temp folder
export OMP_NUM_THREADS=1                    # 2 threads under contention slowed scoring ~25x on 2 cores
export MONAI_LABEL_AUTO_UPDATE_SCORING=false  # else an in-process app POSTs to port 8000 after train/next sample
export MONAI_DWP_REQUIRE_MONAILABEL=1       # tests/apps fail (instead of skipping) when monailabel is missing
export PYTHONWARNINGS=ignore
"$PY" -m pytest tests/apps -q -p no:cacheprovider "$@"
