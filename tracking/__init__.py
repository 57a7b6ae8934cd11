"""Tracking: the run lifecycle, one Tracker protocol and its sinks (MLflow, TensorBoard, a
background writer), the stores and the runs folder's layout. Imports no other room."""
