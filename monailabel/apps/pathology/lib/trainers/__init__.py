"""The pathology template's train tasks."""
