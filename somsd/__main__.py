import sys

from somsd.cli import main

sys.exit(main())
