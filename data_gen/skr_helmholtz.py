"""Generate the skr-helmholtz dataset (see data_gen/recipes.py and data_gen/README.md).

    python data_gen/skr_helmholtz.py --samples 100 --out skr-helmholtz.femno [--workers K] [--n N]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipes import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("skr-helmholtz"))
