"""Scribbles: likelihood + graph-cut segmentation from foreground/background strokes (needs ``numpymaxflow``)."""
