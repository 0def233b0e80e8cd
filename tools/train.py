"""`python tools/train.py ...` is `segzoo train ...`: see zoo/commands/train.py."""
from zoo.commands.train import main

if __name__ == "__main__":
    main()
