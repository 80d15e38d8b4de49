import sys

from refocus_cli.main import main

sys.exit(main())
