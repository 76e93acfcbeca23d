"""DeepEdit building blocks MONAI Label's apps import: click transforms, click simulation, TensorBoard handlers."""
