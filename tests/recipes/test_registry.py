"""Every module the registry names imports, and each verb has its entry point: a moved or renamed
module fails here, not when a user first runs the verb."""

from importlib import import_module

import pytest

from sensorium.recipes import RECIPES

VERBS = [(name, verb, module) for name, recipe in RECIPES.items() for verb, module in sorted(recipe.commands.items())]


@pytest.mark.parametrize("name, verb, module", VERBS, ids=[f"{n}-{v}" for n, v, _ in VERBS])
def test_each_verb_imports_and_has_a_main(name, verb, module):
    entry = getattr(import_module(module), "main", None)
    assert callable(entry), f"{module} (sensorium {verb} {name}) has no main(argv)"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_report_module_has_its_sections_and_every_recipe_has_the_common_verbs(name):
    recipe = RECIPES[name]
    assert {"synth", "eval", "demo"} <= set(recipe.commands)
    if recipe.report is not None:
        assert callable(getattr(import_module(recipe.report), "sections", None)), recipe.report
    assert recipe.configs.is_dir() and {"demo.yaml", "paper.yaml"} <= {p.name for p in recipe.configs.glob("*.yaml")}
