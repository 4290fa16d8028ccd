"""sensorium: one PyTorch + Lightning toolkit for learning representations from sensor data.

Recipes (welding, tactile, cardiac, ...) are LightningModules and DataModules on one shared engine.
Importing this package is cheap: Lightning is imported only by the modules that train.
"""

__version__ = "0.1.0"
