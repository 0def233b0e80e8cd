"""`python tools/calibrate.py ...` is `segzoo calibrate ...`: see zoo/commands/calibrate.py."""
from zoo.commands.calibrate import main

if __name__ == "__main__":
    main()
