"""The pathology template's infer tasks."""
