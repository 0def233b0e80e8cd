"""`python tools/export.py ...` is `segzoo export ...`: see zoo/commands/export.py."""
from zoo.commands.export import main

if __name__ == "__main__":
    raise SystemExit(main())
