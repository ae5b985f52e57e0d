"""Feature extraction throughput: end-to-end images/s and texts/s next to the raw model forward.

End-to-end is the public entry point (hashing, decoding in DataLoader workers, forward, chunked
writes, final folder); the raw rate times only the forward on batches decoded beforehand, so the
gap between the two is the decoding/IO overhead. Uses the params.yaml features settings.

    python benchmarks/features_throughput.py            # the default synthetic catalogue (1,200 items)
    python benchmarks/features_throughput.py --movielens ../shared/data/movielens100k_posters
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from bivrec.data.synthetic import generate
from bivrec.device import pick_device
from bivrec.features.extraction import cpu_threads, usable_cores
from bivrec.features.image import ImageFiles, extract_image_features, load_image_encoder
from bivrec.features.text import extract_text_features, load_text_encoder, render_texts

def synthetic_items(params: dict, folder: Path, n_items: int | None) -> pd.DataFrame:
    """The default pipeline's synthetic catalogue (bivrec.data.synthetic), as an items table."""
    cfg = dict(params["data"]["synthetic"])
    if n_items:
        cfg["n_items"] = n_items
    generate(cfg, params["seed"], folder)
    raw = pd.read_json(folder / "items.jsonl", lines=True)
    return pd.DataFrame({"item": np.arange(1, len(raw) + 1), "original_id": raw["item_id"], "title": raw["title"],
                         "description": raw["description"], "categories": raw["categories"], "image": raw["image"]})


def movielens_items(root: Path, n: int) -> pd.DataFrame:
    movies = pd.read_csv(root / "ml-100k" / "u.item", sep="|", header=None, encoding="latin-1",
                         usecols=[0, 1], names=["movie", "title"])
    movies = movies[[(root / "posters" / f"{m}.jpg").exists() for m in movies["movie"]]].head(n)
    plots = pd.read_csv(root / "items_tmdb_overview.csv").drop_duplicates("movie_id").set_index("movie_id")
    return pd.DataFrame({
        "item": np.arange(1, len(movies) + 1), "original_id": movies["movie"].astype(str).to_numpy(),
        "title": movies["title"].to_numpy(), "categories": "",
        "description": plots["overview"].reindex(movies["movie"]).fillna("").to_numpy(),
        "image": [f"posters/{m}.jpg" for m in movies["movie"]],
    })


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def image_rates(items: pd.DataFrame, image_root: Path, cfg: dict, seed: int, work: Path, repeat: int) -> dict:
    n = len(items)
    device = pick_device(cfg.get("device", "auto"))
    with cpu_threads(device, cfg.get("threads", "auto"), reserved=int(cfg.get("num_workers", 2))):
        threads = torch.get_num_threads()
        load = timed(lambda: load_image_encoder(cfg, seed))
        encoder = load_image_encoder(cfg, seed)
        encoder.model.to(device)
        files = ImageFiles([image_root / p for p in items["image"]], encoder.transform, encoder.image_size)
        pixels = torch.stack([files[i][0] for i in range(n)])  # decoded beforehand
        batches = [b.to(device) for b in pixels.split(int(cfg.get("batch_size", 64)))]

        def forward():
            with torch.inference_mode():
                for batch in batches:
                    encoder.encode(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()

        with torch.inference_mode():
            encoder.encode(batches[0][:8])  # warm-up
    # interleaved, so load from other processes hits both sides alike; medians are reported
    end_to_end, raw = [], []
    for _ in range(repeat):
        end_to_end.append(timed(lambda: extract_image_features(items, image_root, cfg, seed, work / "image")))
        with cpu_threads(device, cfg.get("threads", "auto"), reserved=int(cfg.get("num_workers", 2))):
            raw.append(timed(forward))
    return summary(n, n, end_to_end, raw, load, threads)


def summary(n: int, n_encoded: int, end_to_end: list[float], raw: list[float], load: float, threads: int) -> dict:
    end_to_end_s, raw_s = float(np.median(end_to_end)), float(np.median(raw))
    return {"items": n, "end_to_end_s": end_to_end_s, "model_load_s": load, "threads": threads,
            "end_to_end_per_s": n / end_to_end_s, "raw_forward_per_s": n_encoded / raw_s,
            "end_to_end_without_load_per_s": n / max(end_to_end_s - load, 1e-9)}


def text_rates(items: pd.DataFrame, cfg: dict, work: Path, repeat: int) -> dict:
    device = pick_device(cfg.get("device", "auto"))
    with cpu_threads(device, cfg.get("threads", "auto")):
        threads = torch.get_num_threads()
        load = timed(lambda: load_text_encoder(cfg, device))
        model, _ = load_text_encoder(cfg, device)
        texts = render_texts(items, cfg["template"])
        texts = texts[texts != ""].tolist()
        texts.sort(key=len, reverse=True)
        size = int(cfg.get("batch_size", 128))
        tokenize = getattr(model, "preprocess", None) or model.tokenize
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in tokenize(texts[s:s + size]).items()}
                   for s in range(0, len(texts), size)]

        def forward():
            with torch.inference_mode():
                for batch in batches:
                    model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()

        forward()  # warm-up
    end_to_end, raw = [], []
    for _ in range(repeat):
        end_to_end.append(timed(lambda: extract_text_features(items, cfg, work / "text")))
        with cpu_threads(device, cfg.get("threads", "auto")):
            raw.append(timed(forward))
    return summary(len(items), len(texts), end_to_end, raw, load, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--items", type=int, help="number of items (default: data.synthetic.n_items, or 1,663 posters)")
    parser.add_argument("--movielens", type=Path, help="folder with ml-100k/, posters/, items_tmdb_overview.csv")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", help="override features.*.threads (auto or a number)")
    parser.add_argument("--num-workers", type=int, help="override features.image.num_workers")
    parser.add_argument("--image-size", type=int, help="override features.image.image_size")
    parser.add_argument("--skip", choices=["image", "text"], action="append", default=[])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved end-to-end/raw rounds (medians)")
    args = parser.parse_args()

    params = yaml.safe_load(Path(args.params).read_text())
    image_cfg, text_cfg = dict(params["features"]["image"]), dict(params["features"]["text"])
    for cfg in (image_cfg, text_cfg):
        if args.device:
            cfg["device"] = args.device
        if args.threads:
            cfg["threads"] = args.threads if args.threads == "auto" else int(args.threads)
    if args.num_workers is not None:
        image_cfg["num_workers"] = args.num_workers
    if args.image_size:
        image_cfg["image_size"] = args.image_size

    with tempfile.TemporaryDirectory(prefix="features_bench_") as tmp:
        work = Path(tmp)
        if args.movielens:
            items, image_root, source = movielens_items(args.movielens, args.items or 1663), args.movielens, "MovieLens posters"
        else:
            items, image_root = synthetic_items(params, work / "raw", args.items), work / "raw"
            source = f"default synthetic catalogue, {params['data']['synthetic'].get('image_size', 64)}px JPEG"
        device = pick_device(image_cfg.get("device", "auto"))
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{usable_cores()} cores'}), "
              f"load average {os.getloadavg()[0]:.1f}, {len(items)} items ({source})")
        print(f"image: {image_cfg['family']}/{image_cfg['arch']} @ {image_cfg.get('image_size')}px, batch "
              f"{image_cfg.get('batch_size')}, {image_cfg.get('num_workers')} workers, precision {image_cfg.get('precision')}")
        print(f"text:  {text_cfg['model']}, batch {text_cfg.get('batch_size')}, max_length {text_cfg.get('max_length')}")
        header = f"{'modality':9}{'threads':>8}{'e2e/s':>9}{'e2e-load/s':>12}{'raw fwd/s':>11}{'e2e/raw':>9}{'load s':>8}{'total s':>9}"
        print(header)
        for name in ("image", "text"):
            if name in args.skip:
                continue
            r = (image_rates(items, image_root, image_cfg, params["seed"], work, args.repeat) if name == "image"
                 else text_rates(items, text_cfg, work, args.repeat))
            print(f"{name:9}{r['threads']:>8}{r['end_to_end_per_s']:>9.1f}{r['end_to_end_without_load_per_s']:>12.1f}"
                  f"{r['raw_forward_per_s']:>11.1f}{r['end_to_end_per_s'] / r['raw_forward_per_s']:>9.2f}"
                  f"{r['model_load_s']:>8.2f}{r['end_to_end_s']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
