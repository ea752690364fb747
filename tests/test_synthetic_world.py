import numpy as np
import pytest
from PIL import Image, ImageFilter

from modules import synthetic_world as world


def test_make_dataset_shapes_and_determinism():
    a_imgs, a_caps, a_scenes = world.make_dataset(50, seed=3)
    b_imgs, b_caps, b_scenes = world.make_dataset(50, seed=3)
    c_imgs, c_caps, _ = world.make_dataset(50, seed=4)
    assert a_imgs.shape == (50, 64, 64, 3)
    assert a_imgs.dtype == np.uint8
    assert len(a_caps) == len(a_scenes) == 50
    assert np.array_equal(a_imgs, b_imgs) and a_caps == b_caps and a_scenes == b_scenes
    assert not np.array_equal(a_imgs, c_imgs)
    assert a_caps != c_caps
    assert [s.caption for s in a_scenes] == a_caps


def test_scenes_cover_the_world_and_captions_name_colour_and_shape():
    rng = np.random.default_rng(0)
    scenes = [world.sample_scene(rng) for _ in range(3000)]
    assert {s.shape for s in scenes} == {"circle", "square", "triangle"}
    assert {s.colour for s in scenes} == set(world.COLOURS) and len(world.COLOURS) == 8
    assert {s.background for s in scenes} == set(world.BACKGROUNDS)
    assert {s.position for s in scenes} == set(world.POSITIONS)
    assert {s.size for s in scenes} == {"small", "large"}
    assert all(s.colour != s.background for s in scenes)
    for s in scenes:
        words = s.caption.replace(",", "").split()
        assert s.colour in words and s.shape in words
        assert words[0] == ("an" if s.colour == "orange" and words[1] == "orange" else "a")
    # templates vary: some captions name the background, some a position, some neither
    with_bg = sum("background" in s.caption for s in scenes)
    with_pos = sum(("at the" in s.caption) or ("center" in s.caption) for s in scenes)
    assert 0.3 * len(scenes) < with_bg < 0.7 * len(scenes)
    assert 0.3 * len(scenes) < with_pos < 0.7 * len(scenes)


def test_render_places_object_with_the_named_colours():
    s = world.Scene("square", "red", "blue", "top left", "large", "a red square")
    arr = np.asarray(world.render(s))
    assert arr.shape == (64, 64, 3)
    assert tuple(arr[16, 16]) == world.COLOURS["red"]  # top left quadrant centre
    assert tuple(arr[48, 48]) == world.BACKGROUNDS["blue"]
    assert tuple(arr[16, 48]) == world.BACKGROUNDS["blue"]
    # a triangle points up: its top rows are narrower than its bottom rows
    t = np.asarray(world.render(world.Scene("triangle", "white", "black", "center", "large", "")))
    rows = (t == world.COLOURS["white"]).all(-1).sum(1)
    filled = np.nonzero(rows)[0]
    assert rows[filled[0]] < 4 and rows[filled[-1]] > 20


def test_classifier_scores_at_least_98_percent_on_500_rendered_images():
    imgs, _, scenes = world.make_dataset(500, seed=12345)
    colour_ok = sum(world.classify(im)[0] == s.colour for im, s in zip(imgs, scenes))
    shape_ok = sum(world.classify(im)[1] == s.shape for im, s in zip(imgs, scenes))
    assert colour_ok / 500 >= 0.98
    assert shape_ok / 500 >= 0.98
    # the background hint gives the same answers
    hinted = sum(world.classify(im, background=s.background) == (s.colour, s.shape) for im, s in zip(imgs[:100], scenes[:100]))
    assert hinted >= 98


def test_locate_names_position_and_size_of_rendered_objects():
    imgs, _, scenes = world.make_dataset(300, seed=54321)
    got = [world.locate(im) for im in imgs]
    assert sum(g[0] == s.position for g, s in zip(got, scenes)) == 300
    assert sum(g[1] == s.size for g, s in zip(got, scenes)) >= 297
    assert world.locate(world.render(world.Scene("triangle", "red", "gray", "top right", "large", ""))) == (
        "top right", "large")


def test_classifier_tolerates_blur_and_noise_like_an_autoencoder_round_trip():
    imgs, _, scenes = world.make_dataset(200, seed=99)
    rng = np.random.default_rng(1)
    colour_ok = shape_ok = 0
    for im, s in zip(imgs, scenes):
        blurred = np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(1.2))).astype(np.float64)
        noisy = blurred + rng.normal(0, 12, im.shape)
        c, sh = world.classify(noisy)
        colour_ok += c == s.colour
        shape_ok += sh == s.shape
    assert colour_ok >= 196
    assert shape_ok >= 194


def test_classifier_rejects_wrong_answers():
    # an orange circle must not be called red or a square
    img = world.render(world.Scene("circle", "orange", "white", "center", "large", ""))
    assert world.classify(img) == ("orange", "circle")
    img = world.render(world.Scene("triangle", "purple", "gray", "bottom right", "small", ""))
    assert world.classify(img) == ("purple", "triangle")
    img = world.render(world.Scene("square", "black", "yellow", "top right", "small", ""))
    assert world.classify(np.asarray(img)) == ("black", "square")


def test_colour_fraction_exact_values():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, :32] = world.COLOURS["red"]
    arr[:, 32:] = world.COLOURS["blue"]
    assert world.colour_fraction(arr, "red") == 0.5
    assert world.colour_fraction(arr, "blue") == 0.5
    assert world.colour_fraction(arr, "green") == 0.0
    arr[:16, :32] = (230, 40, 35)  # near red still counts
    assert world.colour_fraction(arr, "red") == 0.5
    arr[:16, :32] = (128, 128, 128)
    assert world.colour_fraction(Image.fromarray(arr), "red") == 0.375
    assert world.colour_fraction(arr, "gray") == 0.125
    with pytest.raises(ValueError):
        world.colour_fraction(arr, "teal")


def test_colour_fraction_matches_rendered_object_area():
    s = world.Scene("square", "green", "white", "center", "large", "")
    arr = np.asarray(world.render(s))
    green = world.colour_fraction(arr, "green")
    white = world.colour_fraction(arr, "white")
    exact = float((arr == world.COLOURS["green"]).all(-1).mean())
    assert green == exact
    assert green + white == 1.0
    assert 0.12 < green < 0.2
