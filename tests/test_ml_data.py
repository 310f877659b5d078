"""Data stores and dataset splits (din_cli.ml.data)."""

from __future__ import annotations

import numpy as np
import pytest

from din_cli.errors import InputError, NotFoundError, UsageError
from din_cli.ml import data, tensorfile


def _load_all(paths):
    return [data.load_store(p) for p in paths]


def test_iid_split_reserves_the_test_pool_and_covers_every_row(tmp_path):
    paths = data.split("digits", tmp_path / "s", participants=4, seed=1)
    assert [p.name for p in paths] == [f"participant-0{k}.npz" for k in range(1, 5)] + ["test.npz"]
    stores = _load_all(paths)
    n = sum(len(s) for s in stores)
    assert n == 1797 and len(stores[-1]) == round(1797 * 0.4)
    sizes = [len(s) for s in stores[:-1]]
    assert max(sizes) - min(sizes) <= 1
    assert all(
        s.x.dtype == np.float32 and s.x.shape[1] == 64 and 0 <= s.x.min() and s.x.max() <= 1
        for s in stores
    )
    again = _load_all(data.split("digits", tmp_path / "t", participants=4, seed=1))
    for a, b in zip(stores, again, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_dirichlet_split_is_non_iid(tmp_path):
    def skew(alpha):
        stores = _load_all(
            data.split("digits", tmp_path / f"a{alpha}", participants=10, alpha=alpha, seed=2)[:-1]
        )
        # mean share of each participant's most common class
        return np.mean([np.bincount(s.y).max() / len(s) for s in stores])

    assert skew(0.1) > skew(1000.0) + 0.3


def test_shuffle_labels_corrupts_only_the_named_participant(tmp_path):
    honest = _load_all(data.split("iris", tmp_path / "h", participants=3, seed=5))
    bad = _load_all(data.split("iris", tmp_path / "b", participants=3, seed=5, shuffle_labels=(2,)))
    for k, (h, b) in enumerate(zip(honest, bad, strict=True)):
        np.testing.assert_array_equal(h.x, b.x)
        if k == 1:
            assert (h.y != b.y).all()
        else:
            np.testing.assert_array_equal(h.y, b.y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"participants": 0}, "at least 1"),
        ({"participants": 3, "alpha": 0.0}, "must be positive"),
        ({"participants": 3, "test_fraction": 1.0}, "outside"),
        ({"participants": 3, "shuffle_labels": (4,)}, "not a participant"),
        ({"participants": 1000}, "cannot feed"),
    ],
)
def test_bad_split_options(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        data.split("iris", tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_csv_npz_safetensors_and_folder_stores(tmp_path):
    (tmp_path / "a.csv").write_text("f1,label,f2\n1.5,0,2\n3,1,4.25\n")
    ds = data.load_store(tmp_path / "a.csv")
    np.testing.assert_array_equal(ds.x, np.array([[1.5, 2], [3, 4.25]], np.float32))
    np.testing.assert_array_equal(ds.y, [0, 1])
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)), y=np.array([2, 2, 1]))
    tensorfile.write(
        tmp_path / "c.safetensors",
        {"x": np.zeros((1, 2), np.float32), "y": np.array([1], np.int64)},
        {},
    )
    folder = data.load_store(tmp_path)
    assert len(folder) == 6 and folder.x.shape == (6, 2)
    np.testing.assert_array_equal(folder.y, [0, 1, 2, 2, 1, 1])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nolabel.csv", "a,b\n1,2\n", "no label column"),
        ("header-only.csv", "a,label\n", "empty"),
        ("blank.csv", "", "empty"),
        ("text.csv", "a,label\nx,1\n", "not a number"),
        ("frac.csv", "a,label\n1,0.5\n", "integer class ids"),
        ("nan.csv", "a,label\nnan,1\n", "NaN or Inf"),
        ("ragged.csv", "a,label\n1\n", "fields"),
        ("store.parquet", "x", "unknown data store format"),
    ],
)
def test_bad_stores_name_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message):
        data.load_store(tmp_path / name)


def test_missing_and_empty_stores(tmp_path):
    with pytest.raises(NotFoundError):
        data.load_store(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no"):
        data.load_store(tmp_path / "empty")
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(InputError, match="empty"):
        data.load_store(tmp_path / "e.npz")
    np.savez(tmp_path / "k.npz", a=np.zeros(3))
    with pytest.raises(InputError, match="needs arrays 'x' and 'y'"):
        data.load_store(tmp_path / "k.npz")


def test_select_rows_allows_repeats():
    ds = data.Dataset(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, 2]))
    sub = data.select_rows(ds, [2, 2, 0])
    np.testing.assert_array_equal(sub.y, [2, 2, 0])
    with pytest.raises(UsageError):
        data.select_rows(ds, [3])
