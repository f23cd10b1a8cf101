"""Recipes: YAML chains of soundvj commands run in resumable pieces (`recipe`), and the recipes
themselves (`demo.yaml`)."""
