"""Regenerate the example images (deterministic; the PNGs are committed beside this script).

    python examples/images/make_images.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour gradients with a few shapes: textured enough to make a model's outputs
    depend on the pixels, small enough to commit."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack(
        [
            0.5 + 0.5 * np.sin(6 * x + rng.uniform(0, 6)),
            0.5 + 0.5 * np.cos(5 * y + rng.uniform(0, 6)),
            0.5 + 0.5 * np.sin(4 * (x + y) + rng.uniform(0, 6)),
        ],
        axis=-1,
    )
    img = Image.fromarray((base * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        x1, y1 = x0 + rng.integers(3, width // 2 + 4), y0 + rng.integers(3, height // 2 + 4)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
    return img


def digit(seven: bool = True) -> Image.Image:
    img = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(img)
    if seven:
        draw.line([(7, 6), (21, 6), (12, 23)], fill=255, width=3)
    else:
        draw.ellipse([8, 5, 20, 23], outline=255, width=3)
    return img


def main() -> None:
    scene(32, 32, 1).save(HERE / "cifar_32.png", optimize=True)
    scene(224, 224, 2).save(HERE / "scene_224.png", optimize=True)
    scene(320, 240, 3).save(HERE / "scene_320x240.jpg", quality=90)
    digit(True).save(HERE / "digit_7.png", optimize=True)
    digit(False).save(HERE / "digit_0.png", optimize=True)


if __name__ == "__main__":
    main()
