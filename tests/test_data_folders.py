import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dcwp_prune.data import DatasetError, create_dataset, default_transform, list_datasets, parse_label_name
from tests._data import make_release, write_image


def test_registry_lists_and_suggests():
    assert {"bffhq", "cifar10c", "cmnist", "csv", "celeba", "waterbirds"} <= set(list_datasets())
    with pytest.raises(KeyError, match="unknown dataset 'bffq'; did you mean 'bffhq'"):
        create_dataset("bffq", root=".")


def test_release_with_valid_split(tmp_path):
    make_release(tmp_path, "cifar10c", num_classes=3)
    train = create_dataset("cifar10c", root=str(tmp_path), split="train", ratio=1, num_classes=3)
    assert len(train) == 15 and train.ids == sorted(train.ids)
    assert train.ids[0] == "align/0/img_a_0_0_0.png"  # ids keep their own underscores
    assert int(train.conflicting.sum()) == 3
    sample = train[0]
    assert sample.image.shape == (3, 8, 8) and sample.label == 0 and sample.bias == 0
    valid = create_dataset("cifar10c", root=str(tmp_path), split="valid", ratio=1, num_classes=3)
    assert valid.info["valid"] == "release" and valid.group_counts().tolist() == [[1] * 3] * 3
    test = create_dataset("cifar10c", root=str(tmp_path), split="test", ratio=1, num_classes=3)
    assert len(test) == 9 and test.ids[0].startswith("test/0/")


def test_valid_carved_from_train_when_absent(tmp_path):
    make_release(tmp_path, "cmnist", num_classes=3, per_class=10, valid=False)
    train = create_dataset("cmnist", root=str(tmp_path), split="train", ratio=1, num_classes=3)
    valid = create_dataset("cmnist", root=str(tmp_path), split="valid", ratio=1, num_classes=3)
    assert not set(train.ids) & set(valid.ids)
    assert len(train) + len(valid) == 33 and valid.group_counts().diag().tolist() == [1, 1, 1]
    assert "carved from train" in valid.info["valid"]


def test_bffhq_flat_eval_jpg_and_protocols(tmp_path):
    make_release(tmp_path, "bffhq", num_classes=2, pct="0.5pct", flat_eval=True, ext=".jpg")
    train = create_dataset("bffhq", root=str(tmp_path), split="train", ratio=0.5)
    assert len(train) == 10 and train.ids[-1].endswith(".jpg")
    full = create_dataset("bffhq", root=str(tmp_path), split="test")
    conf = create_dataset("bffhq", root=str(tmp_path), split="test", test_protocol="conflicting")
    assert len(full) == 4 and len(conf) == 2 and all(y != b for y, b in zip(conf.labels, conf.biases))
    valid = create_dataset("bffhq", root=str(tmp_path), split="valid", ratio=0.5)
    assert len(valid) == 4 and valid.ids[0].startswith("valid/")
    t = default_transform("bffhq", "test")
    assert t(full[0].image).shape == (3, 128, 128)


def test_transforms_per_dataset():
    x = torch.rand(3, 32, 32)
    assert default_transform("cmnist", "train") is None
    assert default_transform("cmnist", "train", image_size=64)(x).shape == (3, 64, 64)
    assert default_transform("cifar10c", "train")(x).shape == (3, 32, 32)
    assert default_transform("celeba", "test")(torch.rand(3, 218, 178)).shape == (3, 224, 224)
    assert default_transform("celeba", "train", image_size=96)(torch.rand(3, 218, 178)).shape == (3, 96, 96)


def test_missing_root_and_split_folders(tmp_path):
    with pytest.raises(DatasetError, match=r"data root '.*nowhere' does not exist. Expected layout:\n.*/bffhq/"):
        create_dataset("bffhq", root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="no 'cifar10c' folder under"):
        create_dataset("cifar10c", root=str(tmp_path))
    with pytest.raises(DatasetError, match="cifar10c needs a data root"):
        create_dataset("cifar10c")
    make_release(tmp_path, "cifar10c", valid=True)
    os.rename(tmp_path / "cifar10c" / "test", tmp_path / "cifar10c" / "test_old")
    with pytest.raises(DatasetError, match=r"missing test folder .*cifar10c/test"):
        create_dataset("cifar10c", root=str(tmp_path), split="test")


def test_ratio_not_in_release_lists_found(tmp_path):
    make_release(tmp_path, "cifar10c", pct="1pct")
    make_release(tmp_path, "cifar10c", pct="5pct")
    with pytest.raises(DatasetError, match=r"no conflict ratio 2% .* ratios found: 1pct, 5pct"):
        create_dataset("cifar10c", root=str(tmp_path), ratio=2)


def test_bad_names_labels_and_empty_classes(tmp_path):
    make_release(tmp_path, "cifar10c", num_classes=3)
    bad = tmp_path / "cifar10c" / "1pct" / "align" / "0" / "noise.png"
    write_image(str(bad))
    with pytest.raises(DatasetError, match=r"cannot parse labels from '.*noise.png'"):
        create_dataset("cifar10c", root=str(tmp_path), num_classes=3)
    bad.unlink()
    write_image(str(tmp_path / "cifar10c" / "1pct" / "align" / "0" / "x_12_0.png"))
    with pytest.raises(DatasetError, match=r"sample 'align/0/x_12_0.png' has label 12 / bias 0, outside 0..2"):
        create_dataset("cifar10c", root=str(tmp_path), num_classes=3)
    (tmp_path / "cifar10c" / "1pct" / "align" / "0" / "x_12_0.png").unlink()
    with pytest.raises(DatasetError, match=r"cifar10c train: class\(es\) \[3, 4, 5, 6, 7, 8, 9\] have no samples"):
        create_dataset("cifar10c", root=str(tmp_path))  # a 10-class release holding only 3 classes


def test_corrupt_images_error_or_skip(tmp_path):
    make_release(tmp_path, "bffhq", num_classes=2, pct="0.5pct", flat_eval=True)
    corrupt = tmp_path / "bffhq" / "0.5pct" / "align" / "1" / "broken_1_1.png"
    corrupt.write_bytes(b"\x89PNG not really")
    train = create_dataset("bffhq", root=str(tmp_path), ratio=0.5)
    k = train.ids.index("align/1/broken_1_1.png")
    with pytest.raises(DatasetError, match=r"corrupt or unreadable image '.*broken_1_1.png'.*skip_corrupt=True"):
        train[k]
    skipping = create_dataset("bffhq", root=str(tmp_path), ratio=0.5, skip_corrupt=True)
    assert len(skipping) == len(train) - 1 and skipping.info["skipped_corrupt"] == 1


@given(
    st.text(alphabet=st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)), max_size=12),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.sampled_from([".png", ".jpg", ".JPEG"]),
)
def test_parser_property(prefix, y, b, ext):
    name = f"{prefix}_{y}_{b}{ext}"
    if os.path.basename(name) != name or name.startswith("."):
        return
    assert parse_label_name(name) == (y, b)


@given(st.text(max_size=20))
def test_parser_never_crashes_unexpectedly(name):
    try:
        y, b = parse_label_name(name + ".png")
        assert y >= 0 and b >= 0
    except DatasetError:
        pass


def test_bffhq_defaults_to_the_only_ratio_its_release_ships(tmp_path):
    make_release(str(tmp_path), name="bffhq", num_classes=2, pct="0.5pct", flat_eval=True)
    ds = create_dataset("bffhq", root=str(tmp_path), split="train")
    assert len(ds) == 2 * 4 + 2 and ds.info["ratio"] == 0.5
