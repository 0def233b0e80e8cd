"""`python -m zoo <command> ...`: the `segzoo` command line without its script."""
import sys

from zoo.commands import main

sys.exit(main())
