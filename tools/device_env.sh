# Sourced by device_ops.sh / device_serve.sh once they have set OUT, BUDGET_S and LOG (their log
# file): the run's clock (left = seconds of BUDGET_S still to spend; log = a timestamped line to
# stdout and $LOG), TOK and SITE, and two functions: register_packages (the workspace packages'
# metadata) and ensure_kernels (csm-cpu's Cython kernels: 1. already there; 2. the prebuilt cp312
# ones carried in .whl[/p1]/csm_cpu_cp312, when this checkout's kernel sources are the ones they
# were built from (SOURCES.sha256); 3. built here (hatchling from the wheels, Cython, a C compiler,
# Python's headers; about a minute)).
T0=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
log() { echo "# [$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
# The Llama-3 tokenizer: $TOK, else a carried one, else the test vocabulary beside the checkout.
if [ -z "${TOK:-}" ]; then
  for t in .whl/llama3/tokenizer.model .whl/p1/llama3/tokenizer.model ../shared/testdata/llama3/tokenizer.model; do
    [ -f "$t" ] && TOK=$t && break
  done
fi
# The folder of register_packages' metadata, first on PYTHONPATH.
SITE=${SITE:-/tmp/site}; case ":${PYTHONPATH:-}:" in *":$SITE:"*) ;; *) export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}";; esac

kernels_ok() { python3 -c 'import csm_cpu._kernels, csm_cpu._engine, csm_cpu._mimi' 2>/dev/null; }
ensure_kernels() {  # $1: a log file
  local pre=""
  for d in .whl/csm_cpu_cp312 .whl/p1/csm_cpu_cp312; do [ -d "$d" ] && pre=$d && break; done
  if [ -n "$pre" ] && ! ldconfig -p 2>/dev/null | grep -q libgomp.so.1; then
    export LD_LIBRARY_PATH="$PWD/$pre${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # the carried libgomp
  fi
  kernels_ok && return 0
  if [ -n "$pre" ] && sha256sum -c --quiet "$pre/SOURCES.sha256" >>"$1" 2>&1; then
    cp "$pre"/*.cpython-312-x86_64-linux-gnu.so packages/csm-cpu/src/csm_cpu/ && kernels_ok && { echo "# kernels: prebuilt ($pre)"; return 0; }
  fi
  echo "# kernels: building (sources differ from the prebuilt ones, or none carried)"
  python3 packages/csm-cpu/hatch_build.py --quiet >>"$1" 2>&1 && kernels_ok
}

# The workspace packages run from packages/*/src on PYTHONPATH, without being installed: their
# metadata (the `csm.backends` entry points through which csm_app finds csm-cpu and csm-mlx) is
# written as .dist-info folders into $1 (a folder on PYTHONPATH, e.g. /tmp/site).
register_packages() {
  python3 - "$1" <<'PY'
import sys, tomllib
from pathlib import Path
site = Path(sys.argv[1]); site.mkdir(parents=True, exist_ok=True)
for pp in sorted(Path("packages").glob("*/pyproject.toml")):
    proj = tomllib.loads(pp.read_text())["project"]
    name, version = proj["name"], proj["version"]
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = proj.get("entry-points", {})
    (d / "entry_points.txt").write_text("".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                                                for g, eps in groups.items()))
    print(f"# registered {name} {version}" + (f" ({', '.join(groups)})" if groups else ""))
PY
}
