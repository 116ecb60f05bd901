"""Generate the skr-darcy-paper dataset: the SKR paper code's nonsymmetric Darcy matrices.

See data_gen/recipes.py and data_gen/README.md.

    python data_gen/skr_darcy_paper.py --samples 100 --out skr-darcy-paper.femno [--workers K]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipes import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("skr-darcy-paper"))
