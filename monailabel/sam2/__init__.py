"""SAM2 (Segment Anything 2) tasks, as MONAI Label's apps import them; unavailable in this SDK (see ``infer``)."""
