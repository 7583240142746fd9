import pytest
import torch

from modelproof.data.splits import Dataset, concat, load_dataset, load_digits, load_splits, split_dataset
from modelproof.util.errors import DataError


def test_digits_is_float_nchw_in_unit_range():
    d = load_digits()
    assert len(d) == 1797 and d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0


def test_digits_resized_to_mnist_size():
    d = load_digits(28)
    assert d.input_shape == (1, 28, 28)
    assert 0.0 <= float(d.images.min()) and float(d.images.max()) <= 1.0


@pytest.mark.parametrize("images,labels,msg", [
    (torch.zeros(4, 1, 8, 8, dtype=torch.float64), torch.zeros(4, dtype=torch.int64), "float32"),
    (torch.zeros(4, 8, 8), torch.zeros(4, dtype=torch.int64), "float32 tensor of shape"),
    (torch.full((4, 1, 8, 8), 2.0), torch.zeros(4, dtype=torch.int64), "[0, 1]"),
    (torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.int64), "labels must be"),
    (torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 9]), "labels must lie in [0, 3)"),
])
def test_dataset_rejects_bad_content(images, labels, msg):
    with pytest.raises(DataError, match=msg.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Dataset(images, labels, ("a", "b", "c"))


def test_split_is_disjoint_stratified_and_deterministic():
    d = load_digits()
    a, b = split_dataset(d, seed=3), split_dataset(d, seed=3)
    assert torch.equal(a.owner.images, b.owner.images)
    assert len(a.owner) + len(a.attacker) + len(a.test) == len(d)
    rows = {tuple(x.flatten().tolist()) for x in a.owner.images}
    assert not rows & {tuple(x.flatten().tolist()) for x in a.test.images}
    counts = torch.tensor(a.owner.class_counts(), dtype=torch.float)
    assert float(counts.min()) / float(counts.max()) > 0.9
    c = split_dataset(d, seed=4)
    assert not torch.equal(a.owner.labels, c.owner.labels)


def test_split_fraction_errors_name_the_value():
    with pytest.raises(DataError, match=r"\(0.5, 0.5, 0.5\)"):
        split_dataset(load_digits(), (0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="attacker_fraction"):
        load_splits("digits", attacker_fraction=1.5)


def test_unknown_dataset_and_missing_folder():
    with pytest.raises(DataError, match="'imagenet'"):
        load_dataset("imagenet", "/tmp")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")


def test_concat_and_subset():
    d = load_digits()
    both = concat([d.subset([0, 1]), d.subset([2])])
    assert len(both) == 3 and torch.equal(both.labels, d.labels[:3])
    with pytest.raises(DataError):
        concat([d, load_digits(16)])
