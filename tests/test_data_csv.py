import pytest

from dcwp_prune.data import DatasetError, create_dataset, dataset_spec
from tests._data import make_csv_dataset, write_image


def _celeba(tmp_path):
    base = tmp_path / "celebA"
    rows = ["image_id,split,Blond_Hair,Male"]
    for i in range(12):
        name = f"{i:06d}.jpg"
        write_image(str(base / "celeba" / "img_align_celeba" / name), seed=i)
        rows.append(f"{name},{i % 3},{1 if i % 2 else -1},{1 if (i // 2) % 2 else -1}")
    (base / "metadata_blonde_subsampled.csv").write_text("\n".join(rows) + "\n")


def test_celeba_preset_maps_minus_one_and_splits(tmp_path):
    _celeba(tmp_path)
    train = create_dataset("celeba", root=str(tmp_path), split="train")
    test = create_dataset("celeba", root=str(tmp_path), split="test")
    assert train.ids == ["000000.jpg", "000003.jpg", "000006.jpg", "000009.jpg"]
    assert train.labels == [0, 1, 0, 1] and train.biases == [0, 1, 1, 0]
    assert len(test) == 4 and train[1].image.shape == (3, 8, 8)


def test_generic_csv_with_custom_columns(tmp_path):
    write_image(str(tmp_path / "imgs" / "a.png"))
    write_image(str(tmp_path / "imgs" / "b.png"))
    (tmp_path / "meta.csv").write_text("file,target,place,fold\na.png,0,1,tr\nb.png,1,1,tr\n")
    ds = create_dataset(
        "csv",
        root=str(tmp_path),
        csv="meta.csv",
        image_dir="imgs",
        path_col="file",
        label_col="target",
        bias_col="place",
        split_col="fold",
        split_values={"train": "tr"},
    )
    assert ds.labels == [0, 1] and ds.biases == [1, 1] and ds.num_classes == 2


def test_csv_errors(tmp_path):
    with pytest.raises(DatasetError, match="metadata CSV .* does not exist"):
        create_dataset("celeba", root=str(tmp_path))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "meta.csv").write_text("file,target\na.png,0\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['place', 'split'\]"):
        create_dataset(
            "csv",
            root=str(tmp_path),
            csv="meta.csv",
            image_dir="imgs",
            path_col="file",
            label_col="target",
            bias_col="place",
        )
    with pytest.raises(DatasetError, match="needs label_col .*--data-option label_col=COLUMN"):
        create_dataset("csv", root=str(tmp_path), path_col="file")
    (tmp_path / "meta.csv").write_text("file,target,place,split\na.png,yes,0,0\n")
    with pytest.raises(DatasetError, match="column 'target' holds 'yes', not an integer label"):
        create_dataset(
            "csv",
            root=str(tmp_path),
            csv="meta.csv",
            image_dir="imgs",
            path_col="file",
            label_col="target",
            bias_col="place",
        )


def test_csv_without_valid_rows_carves_valid_from_train_never_from_test(tmp_path):
    kw = make_csv_dataset(tmp_path, ["tr"] * 32 + ["te"] * 8)
    kw["split_values"] = {"train": "tr", "test": "te"}
    train, valid, test = (
        create_dataset("csv", split=s, valid_fraction=0.25, seed=1, **kw) for s in ("train", "valid", "test")
    )
    assert (len(train), len(valid), len(test)) == (24, 8, 8)
    assert set(train.ids).isdisjoint(valid.ids) and set(train.ids) | set(valid.ids) == {
        f"{i:03d}.png" for i in range(32)
    }
    assert valid.group_counts().tolist() == [[2, 2], [2, 2]]  # stratified by class x bias: 8 per group, a quarter each
    assert "carved from train (25%" in valid.info["valid"] and "carved" in train.info["valid"]
    again = create_dataset("csv", split="valid", valid_fraction=0.25, seed=1, **kw)
    assert again.ids == valid.ids  # the same seed carves the same rows
    other = create_dataset("csv", split="valid", valid_fraction=0.25, seed=2, **kw)
    assert other.ids != valid.ids


def test_csv_valid_rows_are_used_when_present(tmp_path):
    kw = make_csv_dataset(tmp_path, ["0"] * 24 + ["1"] * 8 + ["2"] * 8)
    train, valid = (create_dataset("csv", split=s, **kw) for s in ("train", "valid"))
    assert (len(train), len(valid)) == (24, 8) and valid.info["valid"] == "the CSV's valid rows"
    assert valid.ids == [f"{i:03d}.png" for i in range(24, 32)]


def test_dataset_options_are_checked_against_the_spec():
    dataset_spec("csv").check_extra_options({"path_col": "f", "split_values": {"train": "a"}})
    with pytest.raises(DatasetError, match=r"no option\(s\) \['colour_col'\].*it takes csv, image_dir, path_col"):
        dataset_spec("csv").check_extra_options({"colour_col": "c"})
    with pytest.raises(DatasetError, match=r"\['seed'\]: the run passes these itself"):
        dataset_spec("waterbirds").check_extra_options({"seed": 3})
    with pytest.raises(DatasetError, match="'cmnist' has no option.*it takes none"):
        dataset_spec("cmnist").check_extra_options({"x": 1})
