import sys

from refocus_edge.cli.main import main

sys.exit(main())
