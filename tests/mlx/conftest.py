import sys
from pathlib import Path

import pytest

pytest.importorskip("mlx.core")
sys.path.insert(0, str(Path(__file__).parent))  # np_reference: the stand-in numpy oracle
