import pytest

from dcwp_prune.data import DatasetError, create_dataset
from tests._data import write_image


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
    ds = create_dataset("csv", root=str(tmp_path), csv="meta.csv", image_dir="imgs", path_col="file",
                        label_col="target", bias_col="place", split_col="fold", split_values={"train": "tr"})
    assert ds.labels == [0, 1] and ds.biases == [1, 1] and ds.num_classes == 2


def test_csv_errors(tmp_path):
    with pytest.raises(DatasetError, match="metadata CSV .* does not exist"):
        create_dataset("celeba", root=str(tmp_path))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "meta.csv").write_text("file,target\na.png,0\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['place', 'split'\]"):
        create_dataset("csv", root=str(tmp_path), csv="meta.csv", image_dir="imgs", path_col="file",
                       label_col="target", bias_col="place")
    with pytest.raises(DatasetError, match="needs label_col="):
        create_dataset("csv", root=str(tmp_path), path_col="file")
    (tmp_path / "meta.csv").write_text("file,target,place,split\na.png,yes,0,0\n")
    with pytest.raises(DatasetError, match="column 'target' holds 'yes', not an integer label"):
        create_dataset("csv", root=str(tmp_path), csv="meta.csv", image_dir="imgs", path_col="file",
                       label_col="target", bias_col="place")
