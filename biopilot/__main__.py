import sys

from biopilot.app.cli import main

sys.exit(main())
