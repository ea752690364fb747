import datetime as dt
import os

import pytest
from PIL import Image

from modules import images
from modules.images import (
    FilenameGenerator,
    decode_user_comment,
    encode_user_comment,
    image_grid,
    read_info_from_image,
    resize_image,
    sanitize_filename_part,
    save_image,
)

NOW = dt.datetime(2024, 7, 28, 13, 5, 9)
INFOTEXT = (
    "a cat, 猫, \"quoted\"\nNegative prompt: dog\n"
    "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 12345, Size: 64x48"
)


def _img(w=64, h=48, color=(10, 20, 30)):
    return Image.new("RGB", (w, h), color)


def _files(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------ file names

def test_default_layout_and_numbering(tmp_path):
    out = tmp_path / "txt2img-images"
    p1 = save_image(_img(), out, seed=12345, prompt="a cat", infotext=INFOTEXT, now=NOW)
    p2 = save_image(_img(), out, seed=12346, prompt="a cat", infotext=INFOTEXT, now=NOW)
    assert p1 == out / "2024-07-28" / "00000-12345.png"
    assert p2 == out / "2024-07-28" / "00001-12346.png"
    (out / "2024-07-28" / "00041-99-x.png").write_bytes(b"")
    (out / "2024-07-28" / "notes.txt").write_bytes(b"")
    p3 = save_image(_img(), out, seed=7, prompt="a cat", infotext=INFOTEXT, now=NOW)
    assert p3.name == "00042-7.png"


def test_no_subdirectory_uses_seed_and_prompt(tmp_path):
    p = save_image(_img(), tmp_path, seed=3, prompt="a red fox, (forest:1.2)", save_to_dirs=False, now=NOW)
    assert p == tmp_path / "00000-3-a red fox, (forest_1.2).png"


def test_basename_number_and_suffix(tmp_path):
    p = save_image(_img(), tmp_path, "grid", seed=5, prompt="x", save_to_dirs=False, now=NOW)
    assert p.name == "grid-0000-5-x.png"
    p = save_image(_img(), tmp_path, seed=5, prompt="x", save_to_dirs=False, number=False, suffix="-before-highres-fix", now=NOW)
    assert p.name == "5-x-before-highres-fix.png"
    p = save_image(_img(), tmp_path, seed=None, prompt="x", save_to_dirs=False, number=False, now=NOW)
    assert p.name == "00006.png"  # empty decoration always gets a number; "5-x-..." counts as number 5
    p = save_image(_img(), tmp_path, forced_filename="fixed", extension="jpg", save_to_dirs=False)
    assert p.name == "fixed.jpg"


def test_pattern_tags(tmp_path):
    params = {"steps": 20, "cfg_scale": 7.5, "sampler": "DPM++ 2M", "model_name": "v1-5: pruned",
              "model_hash": "6ce0161689", "job_timestamp": "20240728130500"}
    pattern = "[seed]-[steps]-[cfg]-[sampler]-[width]x[height]-[model_name]-[model_hash]-[date]-[datetime]-[job_timestamp]"
    p = save_image(_img(64, 48), tmp_path, seed=9, prompt="p", pattern=pattern, params=params,
                   save_to_dirs=False, now=NOW)
    assert p.name == "00000-9-20-7.5-DPM++ 2M-64x48-v1-5_ pruned-6ce0161689-2024-07-28-20240728130509-20240728130500.png"


def test_filename_generator_rules():
    g = FilenameGenerator(42, 'A photo, of a (cat:1.2) sitting on the big red mat', now=NOW)
    assert g.apply("[prompt_words]") == "A photo of a cat 1 2 sitting"
    assert g.apply("[prompt]") == "A_photo,_of_a_(cat_1.2)_sitting_on_the_big_red_mat"
    assert g.apply("[seed]-[unknown_tag]-[steps]") == "42-[unknown_tag]-[steps]"  # unknown/absent kept
    assert g.apply("x-[batch_number]-[seed]") == "-42"  # batch of 1: tag and the text before it dropped
    assert g.apply("[datetime<%Y_%m_%d>]") == "2024_07_28"
    assert g.apply("[prompt_hash]") == "8e85555e"
    assert g.apply("[prompt_hash<4>]") == "8e85"
    assert g.apply("[hasprompt<cat|nocat><dog|nodog>]") == "_cat_nodog"
    g = FilenameGenerator(1, "x" * 300)
    assert g.apply("[prompt]") == "x" * 128
    g = FilenameGenerator(1, "!!!")
    assert g.apply("[prompt_words]") == "empty"
    g2 = FilenameGenerator(1, "p", params={"batch_size": 4, "batch_index": 2, "n_iter": 2, "iteration": 1})
    assert g2.apply("[batch_number]-[generation_number]") == "3-7"


def test_sanitize_filename_part():
    assert sanitize_filename_part('  a/b: "c"?*<d>|e\\f#\n. ') == "__a_b___c____d__e_f__._"
    assert sanitize_filename_part('  a/b: "c" . ', replace_spaces=False) == 'a_b_ _c_'
    assert sanitize_filename_part(None) is None


def test_long_unicode_prompt_fits_filesystem(tmp_path):
    p = save_image(_img(), tmp_path, seed=1, prompt="猫" * 200, save_to_dirs=False, now=NOW)
    assert p.exists()
    assert p.name.startswith("00000-1-" + "猫" * 10)
    assert len(p.name.encode()) <= 255


# ------------------------------------------------------------------ atomic writes

def test_atomic_write_leaves_no_temp_file(tmp_path):
    for i in range(3):
        save_image(_img(), tmp_path, seed=i, prompt="p", infotext=INFOTEXT, now=NOW)
    folder = tmp_path / "2024-07-28"
    assert _files(folder) == ["00000-0.png", "00001-1.png", "00002-2.png"]


def test_failed_encode_leaves_nothing(tmp_path):
    cmyk = Image.new("CMYK", (8, 8))  # PNG cannot store CMYK: the encoder raises
    with pytest.raises(OSError):
        save_image(cmyk, tmp_path, seed=1, prompt="p", save_to_dirs=False)
    assert _files(tmp_path) == []


# ------------------------------------------------------------------ embedded infotext

@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_infotext_round_trip(tmp_path, ext):
    p = save_image(_img(), tmp_path, seed=1, prompt="p", infotext=INFOTEXT, extension=ext, save_to_dirs=False)
    assert p.suffix == "." + ext
    with Image.open(p) as im:
        info, items = read_info_from_image(im)
    assert info == INFOTEXT
    assert items == {}


def test_png_extra_chunks_and_rgba_jpeg(tmp_path):
    p = save_image(_img(), tmp_path, seed=1, prompt="p", infotext="x\nSteps: 1, Sampler: Euler, Seed: 1",
                   existing_pnginfo={"postprocessing": "Upscale"}, save_to_dirs=False)
    with Image.open(p) as im:
        assert read_info_from_image(im) == ("x\nSteps: 1, Sampler: Euler, Seed: 1", {"postprocessing": "Upscale"})
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 128))
    p = save_image(rgba, tmp_path, seed=2, prompt="p", infotext="hello", extension="jpeg", save_to_dirs=False)
    with Image.open(p) as im:
        assert im.mode == "RGB"
        assert read_info_from_image(im)[0] == "hello"


def test_exif_user_comment_bytes(tmp_path):
    p = save_image(_img(), tmp_path, seed=1, prompt="p", infotext="Ab猫", extension="jpg", save_to_dirs=False)
    with Image.open(p) as im:
        raw = im.getexif().get_ifd(0x8769)[0x9286]
    assert raw == b"UNICODE\x00" + b"\x00A\x00b\x73\x2b"
    assert encode_user_comment("Ab猫") == raw


def test_decode_user_comment_variants():
    assert decode_user_comment(b"UNICODE\x00" + "hi, 猫".encode("utf-16-le")) == "hi, 猫"
    assert decode_user_comment(b"UNICODE\x00" + "hi, 猫".encode("utf-16-be")) == "hi, 猫"
    assert decode_user_comment(b"ASCII\x00\x00\x00hello\x00") == "hello"
    assert decode_user_comment(b"\x00" * 8 + "ü".encode()) == "ü"
    assert decode_user_comment(None) is None


def test_image_without_info():
    assert read_info_from_image(_img()) == (None, {})


# ------------------------------------------------------------------ grids

@pytest.mark.parametrize(
    "n,rows,cols,empty_spots",
    [(1, 1, 1, False), (2, 1, 2, False), (3, 2, 2, False), (4, 2, 2, False), (5, 2, 3, False),
     (6, 2, 3, False), (7, 3, 3, False), (8, 3, 3, False), (9, 3, 3, False),
     (6, 2, 3, True), (7, 1, 7, True), (8, 2, 4, True)],
)
def test_grid_sizes(n, rows, cols, empty_spots):
    ims = [_img(32, 24, (i * 20, 0, 0)) for i in range(n)]
    grid = image_grid(ims, prevent_empty_spots=empty_spots)
    assert grid.size == (cols * 32, rows * 24)


def test_grid_content_and_explicit_rows():
    ims = [_img(10, 10, (i * 50, 0, 0)) for i in range(5)]
    grid = image_grid(ims, rows=2)
    assert grid.size == (30, 20)
    assert grid.getpixel((0, 0)) == (0, 0, 0)
    assert grid.getpixel((25, 5)) == (100, 0, 0)
    assert grid.getpixel((5, 15)) == (150, 0, 0)
    assert grid.getpixel((25, 15)) == (255, 255, 255)  # empty cell: background
    assert image_grid(ims, rows=9).size == (10, 50)  # rows capped at n
    assert image_grid(ims, batch_size=5, n_rows=0).size == (10, 50)
    mixed = image_grid([_img(10, 10, (255, 0, 0)), _img(4, 4, (0, 255, 0))], rows=1)
    assert mixed.size == (20, 10)
    assert mixed.getpixel((13, 3)) == (0, 255, 0) and mixed.getpixel((11, 1)) == (255, 255, 255)


# ------------------------------------------------------------------ resize modes

def _three_bands_horizontal():
    im = Image.new("RGB", (200, 100), (255, 0, 0))
    im.paste((0, 255, 0), (0, 0, 50, 100))
    im.paste((0, 0, 255), (150, 0, 200, 100))
    return im


def test_just_resize():
    out = resize_image(0, _img(64, 48), 32, 40)
    assert out.size == (32, 40)
    assert resize_image(3, _img(64, 48), 32, 40).tobytes() == out.tobytes()


def test_crop_and_resize_keeps_center():
    out = resize_image(1, _three_bands_horizontal(), 100, 100)
    assert out.size == (100, 100) and out.mode == "RGB"
    assert {out.getpixel((x, y)) for x in (0, 50, 99) for y in (0, 99)} == {(255, 0, 0)}
    out = resize_image("Crop and resize", Image.new("RGBA", (50, 100), (1, 2, 3, 255)), 40, 40)
    assert out.size == (40, 40) and out.mode == "RGB" and out.getpixel((20, 20)) == (1, 2, 3)


def test_resize_and_fill_stretches_edges():
    src = Image.new("RGB", (200, 100), (255, 0, 0))
    src.paste((0, 0, 255), (0, 50, 200, 100))  # top half red, bottom half blue
    out = resize_image(2, src, 100, 100)
    assert out.size == (100, 100)
    assert out.getpixel((50, 2)) == (255, 0, 0)    # top bar = stretched top row
    assert out.getpixel((50, 30)) == (255, 0, 0)   # image itself (rows 25..74)
    assert out.getpixel((50, 70)) == (0, 0, 255)
    assert out.getpixel((50, 97)) == (0, 0, 255)   # bottom bar = stretched bottom row
    tall = Image.new("RGB", (50, 100), (0, 255, 0))
    tall.paste((9, 9, 9), (25, 0, 50, 100))        # left half green, right half grey
    out = resize_image(2, tall, 100, 50)
    assert out.size == (100, 50)
    assert out.getpixel((3, 25)) == (0, 255, 0) and out.getpixel((97, 25)) == (9, 9, 9)


def test_custom_upscaler_only_when_enlarging():
    calls = []

    def up(im, w, h):
        calls.append((im.size, w, h))
        return im.resize((w * 2, h * 2), Image.Resampling.NEAREST)

    assert resize_image(0, _img(16, 16), 32, 32, upscaler=up).size == (32, 32)
    assert resize_image(0, _img(64, 64), 32, 32, upscaler=up).size == (32, 32)
    assert calls == [((16, 16), 32, 32)]
    with pytest.raises(ValueError, match="Unknown upscaler"):
        resize_image(0, _img(), 8, 8, upscaler="ESRGAN_4x")


def test_module_constants():
    assert images.RESIZE_MODES == ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
