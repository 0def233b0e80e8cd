"""`python tools/eval.py ...` is `segzoo eval ...`: see zoo/commands/eval.py."""
from zoo.commands.eval import main

if __name__ == "__main__":
    main()
