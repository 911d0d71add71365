import sys

from biopilot.cli import main

sys.exit(main())
