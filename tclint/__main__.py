import sys

from tclint.cli import main

sys.exit(main())
