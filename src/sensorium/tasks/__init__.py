"""One LightningModule per recipe: the only place where a recipe's data, model, loss and metrics
meet. `base.py` holds what they share."""
