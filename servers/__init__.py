"""Servers: the processes behind ``convscope ui`` and ``convscope serve``.

Command lines for the MLflow server, TensorBoard and optuna-dashboard, process groups that die
with their parent, health checks and the process table. May import ``convscope.tracking``.
"""
