"""The benchmark-file loaders on small files made here (the real ones are not in the repo)."""
import numpy as np
import pytest
from scipy.io import savemat

from cssd_geo import CssdError, datasets, sampling
from cssd_geo.classes import make_class_table


def test_salinas_a_layout_from_mat_files(tmp_path):
    folder = tmp_path / "salinas_a"
    folder.mkdir()
    cube = np.arange(5 * 4 * 6, dtype=np.int16).reshape(5, 4, 6)  # (y, x, band) as in the .mat files
    gt = np.zeros((5, 4), np.uint8)
    gt[0, :2], gt[4, 3] = 10, 14
    savemat(folder / "SalinasA_corrected.mat", {"salinasA_corrected": cube})
    savemat(folder / "SalinasA_gt.mat", {"salinasA_gt": gt})
    data = datasets.load("salinas_a", tmp_path)
    assert dict(data.scene.sizes) == {"band": 6, "y": 5, "x": 4}
    assert np.array_equal(data.scene.values[:, 2, 3], cube[2, 3])
    assert data.labels[4, 3] == 14 and [c.id for c in data.classes] == [1, 10, 11, 12, 13, 14]


def test_fields_are_connected_pixels_of_one_class():
    labels = np.array([[1, 1, 0, 2],
                       [0, 0, 0, 2],
                       [1, 0, 2, 0]])
    data = datasets.LabelledScene("t", None, labels, make_class_table([1, 2], ["a", "b"]))
    fields = data.fields()
    assert len(np.unique(fields[labels > 0])) == 4  # (1: top-left pair, bottom-left), (2: right column, lone)
    assert fields[0, 0] == fields[0, 1] and fields[0, 3] == fields[1, 3] and (fields[labels == 0] == 0).all()


def test_mat_errors_name_the_file(tmp_path):
    savemat(tmp_path / "two.mat", {"a": np.zeros(2), "b": np.ones(2)})
    with pytest.raises(CssdError, match=r"two.mat: holds \['a', 'b'\]; name the variable"):
        datasets.load_mat(str(tmp_path / "two.mat"))
    with pytest.raises(CssdError, match="no variable 'c'"):
        datasets.load_mat(str(tmp_path / "two.mat"), "c")
    with pytest.raises(CssdError, match="unknown; choose one of indian_pines, salinas_a, berlin"):
        datasets.load("pavia", tmp_path)


def test_mat_file_missing_or_v73(tmp_path):
    with pytest.raises(CssdError, match=r"salinas_a/SalinasA_corrected.mat: file not found; check the path"):
        datasets.load("salinas_a", tmp_path)
    # a MATLAB v7.3 file is HDF5 behind a 128-byte MAT header with version 0x0200
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
    (tmp_path / "big.mat").write_bytes(header + bytes(384))
    with pytest.raises(CssdError, match=r"big.mat: a MATLAB v7.3 \(HDF5\) file; save it with -v7 or read it with h5py"):
        datasets.load_mat(str(tmp_path / "big.mat"))


def _two_class_labels():
    """Class 1: 40 pixels in two fields of 20; class 2: 6 pixels in three fields of 2."""
    labels = np.zeros((12, 12), np.int32)
    labels[0:4, 0:5], labels[6:10, 0:5] = 1, 1
    labels[0, 8:10], labels[4, 8:10], labels[8, 8:10] = 2, 2, 2
    return labels


def test_few_shot_split_draws_k_per_class_and_tests_the_rest():
    labels = _two_class_labels()
    rows, cols, test = sampling.few_shot_split(labels, shots=5, seed=3)
    drawn = labels[rows, cols]
    assert (drawn == 1).sum() == 5 and (drawn == 2).sum() == 3  # class 2 has < 2k pixels: half of them
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=False))) == 8
    assert not test[rows, cols].any() and test.sum() == (labels > 0).sum() - 8 and not test[labels == 0].any()
    again = sampling.few_shot_split(labels, shots=5, seed=3)
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], cols)
    assert not np.array_equal(sampling.few_shot_split(labels, shots=5, seed=4)[0], rows)


def test_disjoint_split_tests_only_fields_that_gave_no_sample():
    labels = _two_class_labels()
    fields = datasets.LabelledScene("t", None, labels, make_class_table([1, 2], ["a", "b"])).fields()
    rows, cols, test = sampling.few_shot_split(labels, shots=5, seed=0, fields=fields)
    used = set(fields[rows, cols].tolist())
    assert (labels[rows, cols] == 1).sum() == 5 and len([f for f in used if (labels[fields == f] == 1).all()]) == 1
    assert test.any() and not np.isin(fields[test], list(used)).any()
    assert set(np.unique(fields[test]).tolist()) == set(np.unique(fields[fields > 0]).tolist()) - used
