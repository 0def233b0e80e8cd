"""YAML 1.2 scalars for recipes and every file built from them (ablation grids,
overrides): PyYAML reads YAML 1.1, where `off` is a bool and `010` is octal."""
import re

import yaml

# PyYAML follows YAML 1.1: `1e-3` (no dot) is a string, `on`/`off`/`yes`/`no` are bools
# (`compile: off` would arrive as False), and `010` is octal 8, `1_000` is 1000 and `12:30`
# is 750 (base 60). Read scalars as YAML 1.2 does instead.
_BOOL, _FLOAT, _INT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", "tag:yaml.org,2002:int"
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")  # YAML 1.2's core schema


class RecipeLoader(yaml.SafeLoader):
    """A safe YAML loader with YAML 1.2 scalars, for recipes and every file built from them."""
    yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT)]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_yaml_int(self, node):  # decimal even with leading zeros; 0o and 0x as 1.2 reads them
        text = self.construct_scalar(node)
        return int(text[2:], 8) if text.startswith("0o") else int(text, 16 if text.startswith("0x") else 10)


RecipeLoader.add_constructor(_INT, RecipeLoader.construct_yaml_int)
RecipeLoader.add_implicit_resolver(_INT, _INT_12, list("-+0123456789"))


class RecipeDumper(yaml.SafeDumper):  # quotes `1e3` strings too; still quotes `on` for YAML 1.1 readers
    pass


RecipeLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))
for _cls in (RecipeLoader, RecipeDumper):
    _cls.add_implicit_resolver(_FLOAT, _EXP_FLOAT, list("-+.0123456789"))
