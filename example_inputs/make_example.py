"""Draws the example pictures, each with an inpaint mask in its alpha channel (transparent = masked, as Load Image and
the mask editor do):

- vgt_example.png: a 448x448 scene (the size the released models were trained at), the mask over the bowl on the table;
- vgt_demo_example.png: a 224x224 scene of the small world (what the built-in vgt-demo model draws), a red circle left
  of a blue square on white, the mask over the square and a margin around it.

    python example_inputs/make_example.py
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 448


def scene() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    d = ImageDraw.Draw(img)
    for y in range(SIZE):  # sky, lighter towards the horizon
        t = y / 300
        d.line([(0, y), (SIZE, y)], fill=(int(120 + 90 * t), int(170 + 60 * t), int(235 - 20 * t)))
    d.ellipse([300, 50, 380, 130], fill=(255, 226, 140))  # sun
    d.polygon([(0, 300), (120, 210), (260, 300)], fill=(96, 120, 150))  # hills
    d.polygon([(180, 300), (330, 190), (448, 300)], fill=(80, 104, 138))
    d.rectangle([0, 300, SIZE, SIZE], fill=(92, 150, 70))  # meadow
    d.rectangle([0, 300, SIZE, 312], fill=(70, 128, 60))
    d.rectangle([150, 300, 298, 316], fill=(133, 94, 60))  # table
    d.rectangle([160, 316, 172, 380], fill=(110, 76, 48))
    d.rectangle([276, 316, 288, 380], fill=(110, 76, 48))
    d.chord([180, 250, 268, 330], 0, 180, fill=(225, 230, 240))  # bowl of fruit
    d.ellipse([188, 262, 214, 288], fill=(220, 40, 40))
    d.ellipse([214, 258, 242, 286], fill=(210, 60, 30))
    d.ellipse([236, 266, 258, 290], fill=(230, 180, 40))
    return img.filter(ImageFilter.SMOOTH)


def demo_scene() -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The small world's scene (vgt_impl.demo) and the box of the object the mask covers."""
    from vgt_impl.demo.render import render
    from vgt_impl.demo.scene import Background, Scene, SceneObject

    circle = SceneObject("circle", "red", "large", (62.0, 112.0), 70.0)
    square = SceneObject("square", "blue", "large", (160.0, 112.0), 70.0)
    return render(Scene((circle, square), Background(("white",)), 224)), square.bbox


def main() -> None:
    here = Path(__file__).resolve().parent
    rgba = scene()
    alpha = Image.new("L", rgba.size, 255)
    ImageDraw.Draw(alpha).ellipse([168, 228, 280, 324], fill=0)  # the mask: the bowl and a margin around it
    rgba.putalpha(alpha)
    rgba.save(here / "vgt_example.png", optimize=True)
    print(f"wrote {here / 'vgt_example.png'}")
    demo, (x0, y0, x1, y1) = demo_scene()
    alpha = Image.new("L", demo.size, 255)
    ImageDraw.Draw(alpha).rectangle([x0 - 6, y0 - 6, x1 + 6, y1 + 6], fill=0)  # the square and a 6 px margin
    demo.putalpha(alpha)
    demo.save(here / "vgt_demo_example.png", optimize=True)
    print(f"wrote {here / 'vgt_demo_example.png'}")


if __name__ == "__main__":
    main()
