"""The embedded default dataset: generated offline in seconds, deterministic by seed.

Written in the same raw form as a real download, so the same preprocessing reads it:

- ``interactions.csv``: ``user_id, item_id, timestamp`` (string ids, unix seconds),
- ``items.jsonl``: one JSON object per item with ``item_id, title, description, categories, image``,
- ``images/<item_id>.jpg``: one picture per item,
- ``latent.csv``: the generator's ground truth (``item_id, category, style, cold``) for analysis and tests.

Structure a multimodal multi-interest model can learn:

- every item belongs to one latent category; the category shows in the image (shape, colour and
  texture) and in the text (the category's vocabulary and colour word), with per-item variation;
- inside its category every item has one of ``styles_per_category`` latent styles, which shows in the
  image (the background's hue) and in the text (the product noun); each user prefers one style per
  interest and picks inside it with probability ``style_affinity``;
- items have a Zipf popularity inside their category, categories have a skewed popularity, and a
  ``cold_fraction`` of items is rare (their popularity is scaled by ``cold_popularity``) but their
  content still reveals category and style, so a feature-based view can rank them where an ID view cannot;
- each user mixes 2-4 interests (categories) and dwells on one for a few steps before switching
  (``dwell_probability``); inside an interest the next item is often a neighbour of the previous one
  on a hidden per-category cycle (``transition_locality``), which an ID sequence model can learn;
- a ``noise_rate`` share of clicks are uniform random items (off-interest noise).
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from bivrec.config import ParamsError

#: keys of ``data.synthetic`` read by the shared preprocessing, not by the generator
PREPROCESSING_KEYS = ("kind", "k_core", "duplicates", "user_fold")
#: the generator's seed (another seed gives another catalogue from the same generator); only the
#: download stage reads it, so the split and training seeds never regenerate the data
SEED_KEY = "generator_seed"
DEFAULT_GENERATOR_SEED = 3407
DEFAULTS = {
    "n_users": 2500,
    "n_items": 1200,
    "n_categories": 8,
    "interests_per_user": [2, 4],
    "min_length": 8,
    "max_length": 40,
    "popularity_exponent": 1.0,
    "category_popularity_exponent": 0.5,
    "cold_fraction": 0.2,
    "cold_popularity": 0.05,
    "styles_per_category": 4,
    "style_affinity": 0.7,
    "dwell_probability": 0.8,
    "transition_locality": 0.5,
    "noise_rate": 0.03,
    "image_size": 64,
    "images": True,  # false: no pictures (items.jsonl says image ""), e.g. at MovieLens-25M scale
}
#: users walked at once: their "already in the sequence" flags (users x items booleans) stay under this
SEEN_BUDGET = 2**29

# (theme, nouns): real words so a sentence encoder separates the categories by meaning.
THEMES = [
    ("kitchen", ["skillet", "spatula", "whisk", "ladle", "colander", "kettle", "cutlery", "saucepan"]),
    ("garden", ["shovel", "rake", "hose", "planter", "seeds", "trowel", "pruner", "fertilizer"]),
    ("music", ["guitar", "drum", "violin", "keyboard", "amplifier", "strings", "metronome", "microphone"]),
    ("sports", ["football", "racket", "helmet", "sneakers", "jersey", "dumbbell", "goalpost", "mitt"]),
    ("baby", ["stroller", "crib", "pacifier", "bib", "diaper", "rattle", "onesie", "teether"]),
    ("office", ["stapler", "notebook", "pen", "binder", "folder", "desk lamp", "marker", "envelope"]),
    ("camping", ["tent", "backpack", "lantern", "compass", "sleeping bag", "hiking boots", "canteen", "hammock"]),
    ("beauty", ["lipstick", "perfume", "lotion", "mascara", "shampoo", "nail polish", "serum", "makeup brush"]),
    ("electronics", ["headphones", "charger", "usb cable", "speaker", "tablet", "camera", "router", "battery"]),
    ("toys", ["puzzle", "doll", "building blocks", "kite", "yo-yo", "robot", "teddy bear", "marbles"]),
    ("pets", ["leash", "collar", "kibble", "aquarium", "cat litter", "scratching post", "chew toy", "birdcage"]),
    ("books", ["novel", "atlas", "cookbook", "biography", "dictionary", "comic", "poetry book", "journal"]),
]
COLOURS = [  # (name, hue in [0, 1))
    ("red", 0.0), ("orange", 0.08), ("yellow", 0.15), ("green", 0.33),
    ("teal", 0.48), ("blue", 0.62), ("purple", 0.76), ("pink", 0.9),
]
SHAPES = ["circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring"]
TEXTURES = ["solid", "stripes", "dots", "checker"]
ADJECTIVES = ["classic", "premium", "compact", "durable", "lightweight", "deluxe", "handy", "modern", "sturdy", "soft"]
BRANDS = ["Acme", "Northwind", "Globex", "Initech", "Umbra", "Vertex", "Lumen", "Orbit", "Pioneer", "Zenith"]
FILLER = [
    "Great value for everyday use.", "Ships in a recyclable box.", "Backed by a one year warranty.",
    "Easy to clean and store.", "A customer favourite.", "Makes a thoughtful gift.",
]


def config_with_defaults(cfg: dict) -> dict:
    """The generator's settings: ``cfg`` (params.yaml ``data.synthetic``) over the defaults."""
    unknown = sorted(set(cfg) - set(DEFAULTS) - set(PREPROCESSING_KEYS) - {SEED_KEY})
    if unknown:
        raise ParamsError(f"data.synthetic: unknown key(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    low, high = merged["interests_per_user"]
    if not 1 <= low <= high <= merged["n_categories"]:
        raise ParamsError("data.synthetic.interests_per_user must be [low, high] with 1 <= low <= high <= n_categories")
    if not 2 <= merged["min_length"] <= merged["max_length"]:
        raise ParamsError("data.synthetic: need 2 <= min_length <= max_length")
    if merged["n_items"] < merged["n_categories"] * 4:
        raise ParamsError("data.synthetic: need at least 4 items per category (n_items >= 4 * n_categories)")
    if not 1 <= merged["styles_per_category"] <= len(THEMES[0][1]):
        raise ParamsError(f"data.synthetic.styles_per_category must be in [1, {len(THEMES[0][1])}] (one product noun each)")
    if not 0 <= merged["style_affinity"] <= 1:
        raise ParamsError("data.synthetic.style_affinity must be in [0, 1]")
    return merged


def category_look(category: int) -> dict:
    """Shape, colour and texture of a latent category; combinations repeat only after 32 categories."""
    return {
        "shape": SHAPES[category % len(SHAPES)],
        "colour": COLOURS[(category * 3) % len(COLOURS)],
        "texture": TEXTURES[(category // 2 + category) % len(TEXTURES)],
        "theme": THEMES[category % len(THEMES)],
    }


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radius_of) -> list[tuple[float, float]]:
        t = angle + np.arange(n) * 2 * np.pi / n
        radii = np.array([radius_of(i) for i in range(n)])
        return list(zip(cx + radii * np.cos(t), cy + radii * np.sin(t)))

    if shape == "square":
        return ring(4, lambda i: r)
    if shape == "triangle":
        return ring(3, lambda i: r)
    if shape == "diamond":
        return ring(4, lambda i: r if i % 2 == 0 else 0.6 * r)
    if shape == "star":
        return ring(10, lambda i: r if i % 2 == 0 else 0.45 * r)
    if shape == "hexagon":
        return ring(6, lambda i: r)
    if shape == "cross":
        w = 0.35 * r
        points = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]
    raise ValueError(f"no polygon for shape {shape!r}")


def _texture(texture: str, size: int, fg: tuple, bg: tuple, period: int, phase: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    if texture == "solid":
        on = np.ones((size, size), bool)
    elif texture == "stripes":
        on = ((xx + yy + phase) // period) % 2 == 0
    elif texture == "dots":
        on = ((xx + phase) % period - period / 2) ** 2 + ((yy + phase) % period - period / 2) ** 2 <= (period / 3) ** 2
    else:  # checker
        on = ((xx + phase) // period + (yy + phase) // period) % 2 == 0
    pixels = np.where(on[..., None], np.array(fg, np.uint8), np.array(bg, np.uint8))
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def style_hue(style: int) -> float:
    """Background hue of a style: golden-ratio steps keep any number of styles apart."""
    return (style * 0.618034) % 1.0


def draw_item_image(category: int, style: int, rng: np.random.Generator, size: int) -> Image.Image:
    """The category's shape/colour/texture on the style's background hue, with per-item jitter of
    position, size, angle, hues and noise."""
    look = category_look(category)
    hue = look["colour"][1] + rng.normal(0, 0.025)
    fg = _rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    fg_dark = _rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.55))
    background = _rgb(style_hue(style) + rng.normal(0, 0.02), rng.uniform(0.15, 0.3), rng.uniform(0.85, 1.0))
    r = size * rng.uniform(0.28, 0.4)
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    angle = rng.uniform(0, 2 * np.pi)

    mask = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(mask)
    if look["shape"] == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif look["shape"] == "ring":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        pen.ellipse([cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r], fill=0)
    else:
        pen.polygon(_shape_polygon(look["shape"], cx, cy, r, angle), fill=255)

    period = max(3, int(size * rng.uniform(0.08, 0.14)))
    fill = _texture(look["texture"], size, fg, fg_dark, period, int(rng.integers(0, period)))
    image = Image.composite(fill, Image.new("RGB", (size, size), background), mask)
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float64) + noise, 0, 255).astype(np.uint8), "RGB")


def item_text(category: int, style: int, rng: np.random.Generator) -> dict:
    """Title, description and category path: the style's noun in the category's vocabulary, plus filler."""
    look = category_look(category)
    theme, nouns = look["theme"]
    colour = look["colour"][0]
    noun = nouns[style]
    other = nouns[(style + 1 + rng.integers(len(nouns) - 1)) % len(nouns)]
    adjective = ADJECTIVES[rng.integers(len(ADJECTIVES))]
    brand = BRANDS[rng.integers(len(BRANDS))]
    title = f"{brand} {adjective} {colour} {noun}"
    description = (
        f"A {adjective} {noun} for {theme} lovers, finished in {colour}. "
        f"Pairs well with our {other}. {FILLER[rng.integers(len(FILLER))]}"
    )
    # Categories > len(THEMES) reuse a theme; the numbered group keeps their text distinct.
    group = category // len(THEMES)
    categories = f"Synthetic|{theme.title()}" + (f"|Collection {group}" if group else "")
    return {"title": title, "description": description, "categories": categories}


def _item_catalogue(cfg: dict, rng: np.random.Generator):
    """Category, style, cold flag and sampling weight of every item, plus each category's hidden cycle."""
    n_items, n_categories = cfg["n_items"], cfg["n_categories"]
    category = np.sort(rng.permutation(np.arange(n_items) % n_categories))  # balanced sizes
    style = np.zeros(n_items, np.int64)
    cold = np.zeros(n_items, bool)
    cold[rng.choice(n_items, size=int(round(cfg["cold_fraction"] * n_items)), replace=False)] = True
    weight = np.zeros(n_items)
    cycles = []
    for c in range(n_categories):  # per category, not per item: n_categories iterations
        members = np.flatnonzero(category == c)
        style[members] = rng.permutation(np.arange(members.size) % cfg["styles_per_category"])  # balanced
        rank = rng.permutation(members.size) + 1
        weight[members] = rank ** -float(cfg["popularity_exponent"])
        # the cycle of "next item" transitions runs through the warm items only, style by style
        warm = rng.permutation(members[~cold[members]])
        cycles.append(warm[np.argsort(style[warm], kind="stable")])
    weight[cold] *= cfg["cold_popularity"]
    return category, style, cold, weight, cycles


def _sampling_table(group: np.ndarray, n_groups: int, weight: np.ndarray):
    """Per group its items and their cumulative popularity, padded to the largest group."""
    sizes = np.bincount(group, minlength=n_groups)
    members = np.full((n_groups, sizes.max()), -1)
    cdf = np.ones((n_groups, sizes.max()))
    for g in range(n_groups):  # per group, not per item
        idx = np.flatnonzero(group == g)
        members[g, : idx.size] = idx
        cdf[g, : idx.size] = np.cumsum(weight[idx]) / weight[idx].sum()
    return members, cdf, sizes


def _sequences(cfg: dict, rng: np.random.Generator, category, style, weight, cycles) -> tuple[np.ndarray, np.ndarray]:
    """[U, max_length] item indices (-1 = none) generated step by step, vectorised over users."""
    n_users, n_items, n_categories = cfg["n_users"], cfg["n_items"], cfg["n_categories"]
    n_styles, max_length = cfg["styles_per_category"], cfg["max_length"]

    members, cdf, sizes = _sampling_table(category, n_categories, weight)
    style_members, style_cdf, style_sizes = _sampling_table(category * n_styles + style, n_categories * n_styles, weight)
    # position of each warm item on its category's cycle, and the cycle as a padded table
    cycle_len = np.array([len(cy) for cy in cycles])
    cycle_table = np.full((n_categories, max(cycle_len.max(), 1)), -1)
    cycle_pos = np.full(n_items, -1)
    for c, cy in enumerate(cycles):
        cycle_table[c, : len(cy)] = cy
        cycle_pos[cy] = np.arange(len(cy))

    # users: 2-4 interests drawn with category popularity skew, Dirichlet mixing weights
    low, high = cfg["interests_per_user"]
    n_interests = rng.integers(low, high + 1, size=n_users)
    cat_pop = (np.arange(n_categories) + 1.0) ** -float(cfg["category_popularity_exponent"])
    cat_pop = cat_pop[rng.permutation(n_categories)]
    # Gumbel top-k = sampling categories without replacement proportionally to cat_pop
    keys = np.log(cat_pop)[None, :] - np.log(-np.log(rng.random((n_users, n_categories))))
    ranked = np.argsort(-keys, axis=1)
    has = np.arange(n_categories)[None, :] < n_interests[:, None]
    mix = rng.dirichlet(np.ones(n_categories), size=n_users) * has  # weights over ranked slots
    mix /= mix.sum(1, keepdims=True)
    preferred_style = rng.integers(0, n_styles, size=(n_users, n_categories))  # per user and category

    lengths = rng.integers(cfg["min_length"], max_length + 1, size=n_users)
    out = np.full((n_users, max_length), -1, dtype=np.int32)
    # users in groups whose seen-flags fit SEEN_BUDGET (one group, the whole population, at the default size)
    group = max(1, min(n_users, SEEN_BUDGET // n_items))
    for first in range(0, n_users, group):
        users = slice(first, first + group)
        out[users] = _walk(cfg, rng, lengths[users], mix[users], n_interests[users], ranked[users], preferred_style[users],
                           members, _searchable(cdf), sizes, style_members, _searchable(style_cdf), style_sizes,
                           cycle_table, cycle_pos, cycle_len)
    return out, lengths


def _searchable(cdf: np.ndarray) -> np.ndarray:
    """The rows of a [rows, width] table of cumulative distributions as one sorted array of complex
    numbers ``row + 1j * value`` (numpy orders complex numbers by real, then imaginary part)."""
    return (np.arange(cdf.shape[0])[:, None] + 1j * cdf).ravel()


def _below(table: np.ndarray, width: int, rows: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``(cdf[rows] < draws).sum(1)`` (a draw from each row's cumulative distribution) with one binary
    search per draw in ``_searchable(cdf)``: exact (no arithmetic on the values), no [len(rows), width] matrix."""
    return np.searchsorted(table, rows + 1j * draws[:, 0], side="left") - rows * width


def _walk(cfg, rng, lengths, mix, n_interests, ranked, preferred_style, members, cdf_table, sizes, style_members,
          style_cdf_table, style_sizes, cycle_table, cycle_pos, cycle_len) -> np.ndarray:
    """[len(lengths), max_length] sequences of a group of users (every per-user array sliced to the group;
    the cumulative popularity tables ``_searchable``)."""
    n_items, n_styles, max_length = cfg["n_items"], cfg["styles_per_category"], cfg["max_length"]
    n_users = lengths.size
    out = np.full((n_users, max_length), -1)
    seen = np.zeros((n_users, n_items), bool)
    users = np.arange(n_users)  # rows of this group

    def pick_slot(exclude: np.ndarray | None) -> np.ndarray:
        w = mix.copy()
        if exclude is not None:
            w[users, exclude] = 0.0
            w[w.sum(1) == 0] = mix[w.sum(1) == 0]  # a single-interest user keeps its only interest
        w /= w.sum(1, keepdims=True)
        return np.minimum((w.cumsum(1) < rng.random((n_users, 1))).sum(1), n_interests - 1)

    def popular_item(cats: np.ndarray, who: np.ndarray) -> np.ndarray:
        """By popularity inside the category, or inside the user's preferred style of it."""
        idx = _below(cdf_table, sizes.max(), cats, rng.random((cats.size, 1)))
        by_category = members[cats, np.minimum(idx, sizes[cats] - 1)]
        groups = cats * n_styles + preferred_style[who, cats]
        idx = _below(style_cdf_table, style_sizes.max(), groups, rng.random((cats.size, 1)))
        by_style = style_members[groups, np.minimum(idx, style_sizes[groups] - 1)]
        in_style = (rng.random(cats.size) < cfg["style_affinity"]) & (style_sizes[groups] > 0)
        return np.where(in_style, by_style, by_category)

    slot = pick_slot(None)
    previous = np.full(n_users, -1)
    for step in range(max_length):  # steps, not users: vectorised over all users at once
        if step:
            switch = rng.random(n_users) > cfg["dwell_probability"]
            slot = np.where(switch, pick_slot(slot), slot)
            previous = np.where(switch, -1, previous)
        cats = ranked[users, slot]
        candidate = popular_item(cats, users)
        # neighbour on the hidden cycle of the previous item, when there is a warm previous item
        prev_pos = np.where(previous >= 0, cycle_pos[np.maximum(previous, 0)], -1)
        local = (prev_pos >= 0) & (rng.random(n_users) < cfg["transition_locality"])
        offset = rng.integers(1, 4, size=n_users)
        neighbour = cycle_table[cats, (np.maximum(prev_pos, 0) + offset) % np.maximum(cycle_len[cats], 1)]
        candidate = np.where(local & (neighbour >= 0), neighbour, candidate)
        noisy = rng.random(n_users) < cfg["noise_rate"]
        candidate = np.where(noisy, rng.integers(0, n_items, size=n_users), candidate)
        # no repeated items in a sequence: redraw by popularity a few times, else skip the step
        for _ in range(10):
            clash = seen[users, candidate]
            if not clash.any():
                break
            candidate[clash] = popular_item(cats[clash], users[clash])
        ok = ~seen[users, candidate] & (step < lengths)
        out[ok, step] = candidate[ok]
        seen[users[ok], candidate[ok]] = True
        previous = np.where(ok, candidate, previous)
    return out


def generate(cfg: dict, seed: int, folder: Path) -> None:
    """Write the raw synthetic dataset into ``folder`` (which must not exist yet or be empty)."""
    cfg = config_with_defaults(cfg)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    category, style, cold, weight, cycles = _item_catalogue(cfg, rng)
    sequences, _ = _sequences(cfg, rng, category, style, weight, cycles)

    item_ids = np.array([f"I{i:05d}" for i in range(cfg["n_items"])])
    user_ids = np.array([f"U{u:05d}" for u in range(cfg["n_users"])])
    rows, steps = np.nonzero(sequences >= 0)
    # timestamps: each user starts somewhere in a ~8 month window, gaps of about a day
    start = 1_500_000_000 + rng.integers(0, 20_000_000, size=cfg["n_users"])
    gaps = 60 + rng.exponential(86_400, size=sequences.shape).astype(np.int64)
    times = start[:, None] + np.cumsum(gaps, axis=1)
    interactions = pd.DataFrame(
        {"user_id": user_ids[rows], "item_id": item_ids[sequences[rows, steps]], "timestamp": times[rows, steps]}
    )
    # shuffle the rows like a dump ordered by something else: preprocessing must sort by time itself
    interactions = interactions.iloc[rng.permutation(len(interactions))]
    interactions.to_csv(folder / "interactions.csv", index=False)

    image_rng = np.random.default_rng([seed, 1])
    text_rng = np.random.default_rng([seed, 2])
    with open(folder / "items.jsonl", "w") as meta:
        for i, item_id in enumerate(item_ids):  # one picture per item: inherent per-item work
            image_path = f"images/{item_id}.jpg" if cfg["images"] else ""
            if cfg["images"]:
                draw_item_image(int(category[i]), int(style[i]), image_rng, cfg["image_size"]).save(
                    folder / image_path, quality=90
                )
            record = {"item_id": item_id, **item_text(int(category[i]), int(style[i]), text_rng), "image": image_path}
            meta.write(json.dumps(record) + "\n")
    pd.DataFrame({"item_id": item_ids, "category": category, "style": style, "cold": cold}).to_csv(folder / "latent.csv", index=False)
    (folder / "generator.json").write_text(json.dumps({"seed": seed, "config": cfg}, indent=2, sort_keys=True) + "\n")
