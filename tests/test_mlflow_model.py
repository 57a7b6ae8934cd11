"""A trained network as an MLflow model: ``mlflow.pyfunc.load_model`` predicts class probabilities for
raw photos (arrays of any size, or a DataFrame of encoded images) with the training preprocessing."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from convscope.train.batches import Normalizer
from convscope.train.checkpoint import save_model
from convscope.train.config import build_config
from convscope.train.images import decode_file
from convscope.train.mlflow_model import Network, load_network, prepare_photos, save_mlflow_model
from convscope.train.model import build_model

CLASSES = ["Cat", "Dog"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("model")
    config = build_config("tiny", {"model": {"image_size": 16}})
    torch.manual_seed(0)
    normalizer = Normalizer(torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3]))
    save_model(root / "final", build_model(config.model), config,
               {"class_names": CLASSES, "normalizer": normalizer.state()}, epoch=-1)
    example = np.random.default_rng(0).integers(0, 255, (2, 20, 24, 3), dtype=np.uint8)
    return root / "final", save_mlflow_model(root / "final", example, root / "model")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_mlflow_model_predicts_probabilities_for_raw_photos(saved: tuple[Path, Path]) -> None:
    final, folder = saved
    model = mlflow.pyfunc.load_model(str(folder))
    photos = np.random.default_rng(1).integers(0, 255, (3, 40, 31, 3), dtype=np.uint8)  # any size
    predicted = model.predict(photos)
    assert list(predicted.columns) == CLASSES and len(predicted) == 3
    assert np.allclose(predicted.sum(axis=1), 1.0, atol=1e-5)
    network = load_network(final / "model.safetensors", final / "config.json")
    direct = network.probabilities(prepare_photos(photos, network.image_size)).numpy()
    assert np.allclose(predicted.to_numpy(), direct, atol=1e-6)
    from_bytes = model.predict(pd.DataFrame({"image": [_png(p) for p in photos]}))  # lossless: the same pixels
    assert np.allclose(from_bytes.to_numpy(), predicted.to_numpy(), atol=1e-6)
    single = model.predict(photos[0])  # one H×W×3 photo
    assert np.allclose(single.to_numpy(), predicted.to_numpy()[:1], atol=1e-6)


def test_a_photo_file_gets_the_pixels_training_gave_it(saved: tuple[Path, Path], tmp_path: Path) -> None:
    final, _ = saved
    pixels = np.random.default_rng(2).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    path.write_bytes(_png(pixels))
    network: Network = load_network(final / "model.safetensors", final / "config.json")
    decoded = decode_file(path, network.image_size)  # what training decodes
    assert decoded.array is not None
    assert np.array_equal(prepare_photos(pd.DataFrame({"image": [path.read_bytes()]}), network.image_size)[0].numpy(),
                          decoded.array)
    assert np.array_equal(prepare_photos(pixels, network.image_size)[0].numpy(), decoded.array)


def test_bad_photos_are_named(saved: tuple[Path, Path]) -> None:
    _, folder = saved
    model = mlflow.pyfunc.load_model(str(folder))
    with pytest.raises(Exception, match="photo 1: not a readable image"):
        model.predict(pd.DataFrame({"image": [_png(np.zeros((8, 8, 3), np.uint8)), b"not an image"]}))
    with pytest.raises(Exception, match=r"\(N, H, W, 3\)"):
        model.predict(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(Exception, match="'image' column"):
        model.predict(pd.DataFrame({"photo": [b"x"]}))


def test_the_model_says_what_it_returns(saved: tuple[Path, Path]) -> None:
    _, folder = saved
    info = mlflow.models.get_model_info(str(folder))
    assert [column["name"] for column in info.signature.outputs.to_dict()] == CLASSES
    assert (folder / "input_example.json").is_file() and (folder / "requirements.txt").is_file()


def test_a_run_trained_with_tta_predicts_the_mean_of_each_photo_and_its_mirror(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = build_config("tiny", {"model": {"image_size": 16}, "optim": {"tta": True}})
    model = build_model(config.model).eval()
    normalizer = Normalizer(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]))
    save_model(tmp_path, model, config, {"class_names": ["cat", "dog"], "normalizer": normalizer.state()}, epoch=-1)
    network = load_network(tmp_path / "model.safetensors", tmp_path / "config.json")
    assert network.tta
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        plain = model(normalizer(images)).softmax(dim=1)
        mirrored = model(normalizer(images.flip(3))).softmax(dim=1)
    assert torch.allclose(network.probabilities(images), (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the mirror does change the answer
    network.tta = False
    assert torch.allclose(network.probabilities(images), plain, atol=1e-6)
