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


def test_fields_are_8_connected_pixels_of_one_class():
    labels = np.array([[1, 1, 0, 2],
                       [0, 0, 0, 2],
                       [1, 0, 2, 0],
                       [0, 1, 0, 0]])
    data = datasets.LabelledScene("t", None, labels, make_class_table([1, 2], ["a", "b"]))
    fields = data.fields()
    # class 1: the top pair and the diagonal pair at the bottom left; class 2: the right column
    # and its diagonal neighbour
    assert len(np.unique(fields[labels > 0])) == 3
    assert fields[0, 0] == fields[0, 1] and fields[2, 0] == fields[3, 1] != fields[0, 0]
    assert fields[0, 3] == fields[1, 3] == fields[2, 2] and (fields[labels == 0] == 0).all()


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


def _fields(labels):
    return datasets.LabelledScene("t", None, labels, make_class_table(sorted(set(labels[labels > 0].tolist())),
                                                                       ["c"] * len(set(labels[labels > 0].tolist())))
                                  ).fields()


def test_field_disjoint_split_spreads_shots_over_half_the_fields_and_tests_the_others():
    labels = np.zeros((40, 40), np.int32)
    for i in range(6):  # class 1: six fields of 3 x 3, far apart
        labels[1 + 6 * i:4 + 6 * i, 1:4] = 1
    labels[1:4, 30:33] = 2  # class 2: a single field, so never tested
    fields = _fields(labels)
    for seed in range(5):
        rows, cols, test = sampling.field_disjoint_split(labels, shots=5, seed=seed, fields=fields, gap=0)
        drawn = labels[rows, cols]
        assert (drawn == 1).sum() == 5 and (drawn == 2).sum() == 5
        shot_fields = set(fields[rows, cols][drawn == 1].tolist())
        assert len(shot_fields) == 3  # round-robin over half of the six fields: 2 + 2 + 1 shots
        tested = set(np.unique(fields[test]).tolist())
        assert tested == set(np.unique(fields[labels == 1]).tolist()) - shot_fields  # every other field
        assert not (test & (labels == 2)).any()  # a single-field class is untestable
        again = sampling.field_disjoint_split(labels, shots=5, seed=seed, fields=fields, gap=0)
        assert all(np.array_equal(a, b) for a, b in zip(again, (rows, cols, test), strict=True))


def test_field_disjoint_split_leaves_out_test_pixels_within_the_gap_of_a_training_pixel():
    labels = np.zeros((20, 30), np.int32)
    labels[2:18, 2:6], labels[2:18, 8:12] = 1, 1  # two fields 2 columns apart
    labels[2:18, 20:24], labels[2:18, 26:29] = 2, 2
    fields = _fields(labels)
    for gap in (0, 2, 4):
        rows, cols, test = sampling.field_disjoint_split(labels, shots=4, seed=1, fields=fields, gap=gap)
        tr, tc = np.nonzero(test)
        distance = np.maximum(np.abs(tr[:, None] - rows[None]), np.abs(tc[:, None] - cols[None])).min(axis=1)
        assert test.any() and distance.min() > gap
        if gap == 0:  # nothing else is left out: every pixel of a tested field is tested
            assert np.array_equal(test, np.isin(fields, np.unique(fields[test])))


