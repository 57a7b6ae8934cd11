"""``convscope inspect MODEL PHOTO...``: what a trained network does with your own photos."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from convscope.cli.setting_flags import add_store_flags
from convscope.cli.model_source import MODEL_HELP, load_network, model_run_id, model_uri
from convscope.train.errors import ConfigError

PAGE = "inspection.html"


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="a trained network's prediction for your photos, with every conv layer's feature maps, "
             "saliency and Grad-CAM",
        description=(
            "For each PHOTO: the prediction of MODEL with its probabilities, and every conv layer's feature "
            "maps, saliency and Grad-CAM, drawn exactly like the training pictures, as PNGs and one HTML page "
            "(printed path). --log also adds them to the model's run under inspections/."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="image files (JPEG, PNG, …)")
    parser.add_argument("--out", default="", help="folder for the page and PNGs (default: "
                        "<runs-dir>/inspections/<time>)")
    parser.add_argument("--log", action="store_true", help="also log them to the model's MLflow run")
    add_store_flags(parser)
    parser.set_defaults(handler=handle_inspect)


def handle_inspect(args: argparse.Namespace) -> int:
    uri = model_uri(args.model)
    photos = [Path(p).expanduser() for p in args.photos]
    for photo in photos:
        if not photo.is_file():
            raise ConfigError(f"PHOTO {photo}: no such file")
    from convscope.pictures.inspection import inspect_photo, inspection_page
    from convscope.tracking.stores import resolve_stores
    from convscope.train.images import decode_file

    stores = resolve_stores(args.runs_dir, args.mlflow_uri)
    network = load_network(uri, stores.mlflow_uri)
    images = []
    for photo in photos:
        decoded = decode_file(photo, network.image_size)
        if decoded.array is None:
            raise ConfigError(f"PHOTO {photo}: not a readable image ({decoded.reason}); give a JPEG, PNG or "
                              "another image file")
        images.append(decoded.array)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out).expanduser() if args.out else stores.runs_dir / "inspections" / stamp
    out.mkdir(parents=True, exist_ok=True)
    import torch

    inspections = [inspect_photo(network, torch.from_numpy(image), str(photo), out / f"{n:02d}-{photo.stem}")
                   for n, (photo, image) in enumerate(zip(photos, images), start=1)]
    page = out / PAGE
    page.write_text(inspection_page(uri, inspections))
    for seen in inspections:
        shown = ", ".join(f"{name} {p:.3f}" for name, p in sorted(seen.probabilities.items(), key=lambda kv: -kv[1]))
        print(f"{seen.photo}: {seen.predicted} ({shown})")
    print(f"pictures: {page} ({sum(len(s.pictures) for s in inspections)} PNGs beside it)")
    if args.log:
        _log(uri, stores, out, stamp)
    return 0


def _log(uri: str, stores: object, out: Path, stamp: str) -> None:
    from convscope.tracking.mlflow_sink import attach_to_run

    tracking_uri = stores.mlflow_uri  # type: ignore[attr-defined]
    run_id = model_run_id(uri, tracking_uri)
    if run_id is None:
        raise ConfigError(f"--log: {uri} names no run to log to (the pictures are in {out})")
    folders = sorted({path.parent for path in out.rglob("*") if path.is_file()})
    for folder in folders:  # one call per folder: each photo's PNGs, then the page
        relative = folder.relative_to(out)
        attach_to_run(tracking_uri, run_id, sorted(p for p in folder.iterdir() if p.is_file()),
                      f"inspections/{stamp}" + ("" if str(relative) == "." else f"/{relative}"),
                      {"convscope.inspected": stamp} if folder == out else {})
    print(f"logged to run {run_id} under inspections/{stamp}/")
