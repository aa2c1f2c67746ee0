#!/usr/bin/env python3
"""Writes a tiny YOLO detection dataset (a few images with one box each,
labels, data.yaml) into a directory: enough to train for real on CPU with
no downloads. Usage: tiny_dataset.py DIR [IMAGES]"""

import random
import sys
from pathlib import Path


def write(root, images=8, size=64, seed=0):
    from PIL import Image, ImageDraw  # Pillow comes with Ultralytics

    rng = random.Random(seed)
    root = Path(root)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(images if split == "train" else max(2, images // 4)):
            img = Image.new("RGB", (size, size), tuple(rng.randrange(40, 90) for _ in range(3)))
            w, h = rng.randint(size // 4, size // 2), rng.randint(size // 4, size // 2)
            x, y = rng.randint(0, size - w), rng.randint(0, size - h)
            ImageDraw.Draw(img).rectangle([x, y, x + w, y + h], fill=(230, 200, 40))
            img.save(root / "images" / split / f"{i:03}.jpg")
            cx, cy = (x + w / 2) / size, (y + h / 2) / size
            (root / "labels" / split / f"{i:03}.txt").write_text(
                f"0 {cx:.4f} {cy:.4f} {w / size:.4f} {h / size:.4f}\n")
    # No `path:` key: Ultralytics resolves the splits next to this file.
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: box\n")
    return root


if __name__ == "__main__":
    write(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8)
