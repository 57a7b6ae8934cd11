"""The code MLflow loads for a convscope model ("models from code"): the pyfunc class, set as the model.

MLflow copies this file into every logged model and runs it when the model is loaded; the network's
weights and config come in as the model's artifacts (``train.mlflow_model``)."""

from typing import Any

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model

from convscope.train.mlflow_model import load_network, predict_frame


class ConvscopeClassifier(mlflow.pyfunc.PythonModel):
    """A convscope network: ``predict`` takes photos and returns class probabilities (``train.mlflow_model``)."""

    def load_context(self, context: Any) -> None:
        self.network = load_network(context.artifacts["weights"], context.artifacts["config"])

    # model_input: a uint8 array (N, H, W, 3), or a DataFrame of encoded images. MLflow reads an input
    # schema from most hints; from np.ndarray (and pd.DataFrame) it reads none, so predict takes both.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> Any:
        return predict_frame(self.network, model_input)


set_model(ConvscopeClassifier())
