import sys

from cotflow.cli import main

sys.exit(main())
