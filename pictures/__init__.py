"""Pictures: what a layer learned, drawn and measured at every epoch.

Activation capture with forward hooks, feature-map and filter grids, gradient saliency and
Grad-CAM, per-layer activation statistics, the saved probe activations and the HTML pages.
May import ``convscope.tracking``; nothing above it.
"""
