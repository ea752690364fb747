"""ControlNet: control models, preprocessors and the sampling hook."""
