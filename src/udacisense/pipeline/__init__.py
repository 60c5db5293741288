"""Recipes, the stage registry and the runner: ``udacisense run recipe.yaml``."""
