import sys

from femno.cli.main import main

sys.exit(main())
