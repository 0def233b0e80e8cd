"""`python tools/predict.py ...` is `segzoo predict ...`: see zoo/commands/predict.py."""
from zoo.commands.predict import main

if __name__ == "__main__":
    main()
