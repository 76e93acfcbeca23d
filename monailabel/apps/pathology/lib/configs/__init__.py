"""One ``TaskConfig`` per model; ``--conf models`` picks them by module name."""
