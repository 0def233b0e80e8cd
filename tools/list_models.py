"""`python tools/list_models.py ...` is `segzoo list ...`: see zoo/commands/list_models.py."""
from zoo.commands.list_models import main

if __name__ == "__main__":
    main()
