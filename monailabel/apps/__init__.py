"""Template apps shipped with the package (``monailabel apps`` lists and copies them)."""
