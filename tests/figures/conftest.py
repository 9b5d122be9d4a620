"""tests/figures: the helper modules here (fig_samples, fig_check) import as plain modules."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
