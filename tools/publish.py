"""`python tools/publish.py ...` is `segzoo publish ...`: see zoo/commands/publish.py."""
from zoo.commands.publish import main

if __name__ == "__main__":
    main()
