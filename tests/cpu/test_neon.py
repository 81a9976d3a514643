"""The arm64 NEON path, checked on this x86 machine: built with the aarch64 cross compiler and
run under qemu user emulation (Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and
qemu-user-static; .ci/run installs them where it can). Skipped where they are missing."""

import shutil
import subprocess
from pathlib import Path

import pytest

import csm_cpu

HERE = Path(__file__).parent
PKG = Path(csm_cpu.__file__).parent
CC, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64-static")
pytestmark = pytest.mark.skipif(not (CC and QEMU), reason="no aarch64 cross compiler / qemu-aarch64-static")


def test_neon_dot_products_match_portable(tmp_path):
    exe = tmp_path / "kernels_check"
    build = subprocess.run([CC, "-O2", "-static", "-Wall", "-Wextra", "-Werror", f"-I{PKG / 'include'}",
                            str(HERE / "neon" / "kernels_check.c"), "-o", str(exe), "-lm"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300)
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    for fmt in ("f32", "bf16", "q8_0", "q4_0", "q4_k"):
        assert f"{fmt}: " in run.stdout


def test_extension_modules_compile_for_arm64(tmp_path):
    """The Cython modules (their generated C and every header) build for arm64 with NEON + OpenMP."""
    cython = pytest.importorskip("Cython.Build")
    import sysconfig

    src = tmp_path / "csm_cpu"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    for name in ("_kernels", "_engine"):
        cython.cythonize(str(src / f"{name}.pyx"), include_path=[str(tmp_path)], quiet=True, language_level=3)
        r = subprocess.run([CC, "-O0", "-fopenmp", "-fPIC", "-Werror=implicit-function-declaration", "-c",
                            f"-I{sysconfig.get_paths()['include']}", f"-I{src / 'include'}",
                            str(src / f"{name}.c"), "-o", str(tmp_path / f"{name}.o")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
