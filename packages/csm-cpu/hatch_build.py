"""Hatchling build hook: compile csm_cpu's Cython extensions (cythonize + setuptools build_ext).

- Wheels: the extensions are built in a temporary directory and force-included into the wheel.
- Editable installs (pip install -e, hatch workspaces): built in place into src/csm_cpu, where
  the editable path finds them. `python hatch_build.py` rebuilds there what is missing or older
  than its sources (the test command runs it: a fresh clone in a reused environment has none).
- OpenMP is used when a try-compile with the compiler's flag succeeds; otherwise the kernels
  build serial (CSM_CPU_OPENMP=0 forces that).
- Cython directives are set once here; CSM_CPU_DEBUG=1 turns bounds/wraparound checks on.
- The build is baseline for the target (no -mavx2/-march=native): ISA-specific code lives in
  include/*.h behind per-function target attributes and is picked at import.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # `python hatch_build.py` needs only Cython + setuptools (e.g. a bare --target install)
    BuildHookInterface = object

PACKAGE = "csm_cpu"
OMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def _compiler():
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    return cc


def openmp_flags() -> tuple[list[str], list[str]]:
    """(compile args, link args) that enable OpenMP here, or ([], []) for a serial build."""
    if os.environ.get("CSM_CPU_OPENMP", "1") == "0":
        return [], []
    cc = _compiler()
    if cc.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "omp_test.c")
        src.write_text(OMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = cc.compile([str(src)], output_dir=tmp, extra_postargs=cflags)
                cc.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=lflags)
                return cflags, lflags
            except Exception:  # noqa: BLE001 - any compiler failure means "no OpenMP here"
                continue
    print("csm-cpu: the C compiler has no OpenMP; building serial kernels", file=sys.stderr)
    return [], []


def cython_directives() -> dict[str, bool | int]:
    debug = os.environ.get("CSM_CPU_DEBUG", "0") == "1"
    return {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": not debug,
        "embedsignature": True,
    }


def build_extensions(root: Path, inplace: bool, out_dir: Path) -> list[Path]:
    """Cythonize and compile every src/csm_cpu/*.pyx; return the built extension paths.

    inplace=True writes them into src/csm_cpu (editable installs; `python hatch_build.py`
    does the same for a quick rebuild), otherwise under out_dir/lib.
    """
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    pkg = root / "src" / PACKAGE
    include = pkg / "include"
    cflags, lflags = openmp_flags()
    if _compiler().compiler_type != "msvc":
        cflags = ["-O3", "-fno-strict-aliasing", *cflags]
    depends = [str(h) for h in include.glob("*.h")] + [str(x) for x in pkg.glob("*.pxd")]
    extensions = [
        Extension(
            f"{PACKAGE}.{p.stem}",
            [str(p.relative_to(root))],
            include_dirs=[str(include)],
            depends=depends,
            extra_compile_args=cflags,
            extra_link_args=lflags,
        )
        for p in sorted(pkg.glob("*.pyx"))
    ]
    cwd = os.getcwd()
    os.chdir(root)  # setuptools resolves the relative source and package paths from here
    try:
        modules = cythonize(
            extensions,
            compiler_directives=cython_directives(),
            build_dir=str(Path("build", "cython")),
            include_path=[str(pkg)],
            quiet=True,
        )
        dist = Distribution({"name": "csm-cpu", "ext_modules": modules, "package_dir": {"": "src"}})
        cmd = dist.get_command_obj("build_ext")
        if inplace:
            cmd.inplace = True
        else:
            cmd.build_lib = str(out_dir / "lib")
        cmd.build_temp = str(out_dir / "temp")
        cmd.ensure_finalized()
        cmd.run()
        return [(root / cmd.get_ext_fullpath(ext.name)).resolve() for ext in modules]
    finally:
        os.chdir(cwd)


class CythonBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        editable = version == "editable"
        self._out_dir = Path(tempfile.mkdtemp(prefix="csm_cpu_build_"))
        built = build_extensions(Path(self.root), editable, self._out_dir)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            for path in built:
                build_data["force_include"][str(path)] = f"{PACKAGE}/{path.name}"

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        shutil.rmtree(self._out_dir, ignore_errors=True)


if __name__ == "__main__":  # rebuild in place what is missing or stale: python hatch_build.py
    with tempfile.TemporaryDirectory() as tmp:
        for p in build_extensions(Path(__file__).resolve().parent, True, Path(tmp)):
            if "--quiet" not in sys.argv[1:]:
                print(p)
