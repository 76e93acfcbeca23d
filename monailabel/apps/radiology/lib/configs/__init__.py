"""One ``TaskConfig`` per model, as in MONAI Label's radiology app; ``--conf models`` picks them by module name."""
