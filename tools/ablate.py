"""`python tools/ablate.py ...` is `segzoo ablate ...`: see zoo/commands/ablate.py."""
from zoo.commands.ablate import main

if __name__ == "__main__":
    main()
