"""Training: tiles and their sampler, the LightningModule, the trainer, callbacks and resuming.

This package imports Lightning; :func:`pixnet.tl.fit` imports it only when it trains.
"""
