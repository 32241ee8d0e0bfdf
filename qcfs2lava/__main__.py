import sys

from qcfs2lava.cli import main

sys.exit(main())
