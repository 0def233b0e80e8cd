"""`python tools/benchmark.py ...` is `segzoo benchmark ...`: see zoo/commands/benchmark.py."""
from zoo.commands.benchmark import main

if __name__ == "__main__":
    main()
