"""Odd inputs a user's data holds: each is read right or refused by name (file, row, column), and
every row that is dropped is said."""

import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dcwp_prune.data import DatasetError, create_dataset
from dcwp_prune.data.folders import FolderDataset, load_rgb
from dcwp_prune.run.cli import main

from ._data import TINY_TOML, make_release, write_image


# ------------------------------------------------------------------------------ images
def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    levels = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)  # 0 .. 61380 of 65535
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    t = load_rgb(str(tmp_path / "deep.png"))
    assert t.shape == (3, 32, 32) and len(t.unique()) == 1024  # not two (black and white)
    assert abs(t.max().item() - 61380 / 65535) < 1e-6 and t[0].equal(t[2])


def test_an_image_beyond_the_pixel_limit_is_named_and_skip_corrupt_skips_it(tmp_path, monkeypatch):
    write_image(str(tmp_path / "ok.png"), size=8)
    write_image(str(tmp_path / "huge.png"), size=40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 40 x 40 > 2 x 500: PIL's DecompressionBombError
    with pytest.raises(DatasetError, match=r"huge\.png' is larger than the image library allows"):
        load_rgb(str(tmp_path / "huge.png"))
    os.rename(tmp_path / "huge.png", tmp_path / "huge_0_0.png")
    os.rename(tmp_path / "ok.png", tmp_path / "ok_1_1.png")
    ds = FolderDataset(
        [str(tmp_path / "huge_0_0.png"), str(tmp_path / "ok_1_1.png")], str(tmp_path), 2, {}, skip_corrupt=True
    )
    assert ds.ids == ["ok_1_1.png"] and ds.info["skipped_corrupt"] == 1


def test_images_of_different_sizes_are_refused_before_the_run_naming_one_of_each(tmp_path):
    base = make_release(str(tmp_path / "data"), name="cmnist", num_classes=10, pct="5pct", per_class=2)
    odd = os.path.join(base, "test", "3", "odd_3_4.png")
    write_image(odd, size=12)
    (tmp_path / "t.toml").write_text(TINY_TOML.replace("batch_size = 64", "batch_size = 8"))
    r = CliRunner().invoke(
        main,
        [
            "mlp",
            "--data",
            "cmnist",
            "--data-root",
            str(tmp_path / "data"),
            "--ratio",
            "5",
            "--config",
            str(tmp_path / "t.toml"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "not all the same size" in r.output and "12x12: " + odd in r.output and "8x8: " in r.output
    assert "--image-size" in r.output and "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_an_empty_conflict_folder_is_said(tmp_path):
    base = make_release(str(tmp_path), name="cmnist", num_classes=10, pct="5pct", per_class=2)
    conflict = os.path.join(base, "5pct", "conflict")
    for d, _, files in os.walk(conflict):
        for f in files:
            os.unlink(os.path.join(d, f))
    with pytest.warns(RuntimeWarning, match="conflict' is empty: this training set holds no bias-conflicting image"):
        create_dataset("cmnist", root=str(tmp_path), split="train", ratio=5)


# ------------------------------------------------------------------------------ metadata CSVs
def _csv(tmp_path, body: bytes, n_images=6):
    for i in range(n_images):
        write_image(str(tmp_path / "imgs" / f"{i}.png"), seed=i)
    (tmp_path / "meta.csv").write_bytes(body)
    return dict(
        root=str(tmp_path),
        csv="meta.csv",
        image_dir="imgs",
        path_col="file",
        label_col="y",
        bias_col="b",
        split_col="s",
    )


GOOD = "file,y,b,s\n0.png,0,0,0\n1.png,1,1,0\n2.png,0,1,0\n3.png,1,0,0\n4.png,0,0,2\n5.png,1,1,2\n"


def test_a_byte_order_mark_is_read(tmp_path):
    kw = _csv(tmp_path, b"\xef\xbb\xbf" + GOOD.encode())
    assert create_dataset("csv", split="test", **kw).ids == ["4.png", "5.png"]


def test_latin1_text_is_refused_naming_the_line(tmp_path):
    kw = _csv(tmp_path, (GOOD + "caf\xe9.png,0,0,0\n").encode("latin-1"))
    with pytest.raises(
        DatasetError, match=r"meta\.csv: line 8 is not UTF-8 text \(byte 0xe9\); save the file as UTF-8"
    ):
        create_dataset("csv", split="train", **kw)


@pytest.mark.parametrize("cell", ["inf", "1.5", "nan", "yes"])
def test_a_label_that_is_not_an_integer_names_the_row_and_column(tmp_path, cell):
    kw = _csv(tmp_path, GOOD.replace("3.png,1,0,0", f"3.png,{cell},0,0").encode())
    with pytest.raises(DatasetError, match=rf"meta\.csv: row 5, column 'y' holds '{cell}', not an integer label"):
        create_dataset("csv", split="train", **kw)


def test_short_rows_and_unknown_split_values_are_dropped_with_a_warning_each(tmp_path):
    kw = _csv(tmp_path, (GOOD + "0.png,1\n9.png,0,0,7\n8.png,1,1,7\n").encode())
    with pytest.warns(RuntimeWarning) as seen:
        ds = create_dataset("csv", split="train", **kw)
    text = " | ".join(str(w.message) for w in seen)
    assert "row 8 (1 in all) dropped: a cell of ['file', 'y', 'b', 's'] is missing" in text
    assert "rows 9, 10 (2 in all) dropped: column 's' holds '7'" in text
    assert ds.ids == ["0.png", "1.png", "2.png", "3.png"]


def test_the_same_image_in_two_splits_is_refused_and_a_repeat_in_one_split_dropped(tmp_path):
    kw = _csv(tmp_path, (GOOD + "4.png,0,0,0\n").encode())
    with pytest.raises(
        DatasetError, match=r"image '4\.png' is in split 'test' \(row 6\) and in split 'train' \(row 8, column 's'\)"
    ):
        create_dataset("csv", split="train", **kw)
    kw = _csv(tmp_path, (GOOD + "1.png,1,1,0\n").encode())
    with pytest.warns(RuntimeWarning, match=r"row 8 \(1 in all\) dropped: the image is listed again in the same split"):
        ds = create_dataset("csv", split="train", **kw)
    assert ds.ids == ["0.png", "1.png", "2.png", "3.png"]
