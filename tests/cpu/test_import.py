"""Importing csm_cpu where its compiled modules do not load names the problem and the fix."""

import subprocess
import sys

# Run in a fresh interpreter: a finder placed first refuses csm_cpu._kernels, as a checkout
# whose extensions were never built would.
BLOCK_KERNELS = """
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "csm_cpu._kernels":
            raise ImportError("No module named 'csm_cpu._kernels'")
        return None

sys.meta_path.insert(0, Refuse())
try:
    import csm_cpu
except ImportError as err:
    print(err)
    sys.exit(3)
"""


def test_missing_kernels_give_a_clear_error():
    run = subprocess.run([sys.executable, "-c", BLOCK_KERNELS], capture_output=True, text=True)
    assert run.returncode == 3, run.stderr
    message = run.stdout
    assert "csm_cpu: its compiled kernels do not load" in message
    assert "No module named 'csm_cpu._kernels'" in message
    assert "hatch_build.py" in message and "partially initialized" not in message
