import numpy as np
import pytest
from PIL import Image

from densemed import config
from densemed.data.dataset import PatchDataset, discover_pairs, load_cases, map_labels
from densemed.errors import DensemedError


def _folder(tmp_path, n=3, size=(20, 24), label_fn=None):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size).astype(np.uint8)).save(tmp_path / "images" / f"c{i}.png")
        lab = (label_fn or (lambda r: (r.random(size) > 0.7).astype(np.uint8) * 255))(rng)
        Image.fromarray(lab).save(tmp_path / "labels" / f"c{i}.png")
    return tmp_path


def _cfg(root, *extra):
    return config.load(None, [f"data.root={root}", "data.patch_size=[16,16]", *extra])


def test_binary_0_255_labels_map_to_classes_0_1(tmp_path):
    train, val = load_cases(_cfg(_folder(tmp_path)))
    for case in train + val:
        assert set(np.unique(case.label)) <= {0, 1}


def test_image_without_label_is_named(tmp_path):
    root = _folder(tmp_path)
    (root / "labels" / "c1.png").unlink()
    with pytest.raises(DensemedError, match=r"c1\.png: no label file"):
        discover_pairs(root)


def test_empty_image_folder_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DensemedError, match="no images found"):
        discover_pairs(tmp_path)


def test_label_of_other_size_is_named(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "labels" / "c2.png")
    with pytest.raises(DensemedError, match=r"c2\.png: label size \(5, 5\) differs"):
        load_cases(_cfg(root))


def test_label_values_outside_the_classes_are_named(tmp_path):
    root = _folder(tmp_path, label_fn=lambda r: r.integers(0, 4, (20, 24)).astype(np.uint8))
    with pytest.raises(DensemedError, match="outside the 2 configured classes"):
        load_cases(_cfg(root))


def test_label_map_inverts_isbi_convention():
    d = config.load(None, ["data.label_map={0: 1, 255: 0}"]).data
    out = map_labels(np.array([[0, 255], [255, 0]]), d, "x.png")
    np.testing.assert_array_equal(out, [[1, 0], [0, 1]])


def test_patches_are_reproducible_per_epoch_and_differ_between_epochs(tmp_path):
    train, _ = load_cases(_cfg(_folder(tmp_path)))
    ds = PatchDataset(train, [16, 16], 0.5, 4, seed=3)
    a = ds[1]["image"].clone()
    assert ds[1]["image"].equal(a)
    ds.set_epoch(1)
    assert not ds[1]["image"].equal(a)


def test_foreground_fraction_one_centres_every_patch_on_foreground(tmp_path):
    def one_dot(r):
        lab = np.zeros((20, 24), np.uint8)
        lab[3, 20] = 255
        return lab

    train, _ = load_cases(_cfg(_folder(tmp_path, label_fn=one_dot), "data.patch_size=[4,4]", "data.val_fraction=0"))
    ds = PatchDataset(train, [4, 4], 1.0, 20)
    assert all(int(ds[i]["label"].sum()) == 1 for i in range(20))


def test_images_smaller_than_the_patch_are_zero_padded(tmp_path):
    train, _ = load_cases(_cfg(_folder(tmp_path, size=(10, 12)), "data.patch_size=[16,16]"))
    s = PatchDataset(train, [16, 16], 0.0, 1)[0]
    assert s["image"].shape == (1, 16, 16) and s["label"].shape == (1, 16, 16)
    assert float(s["image"][0, 0].abs().sum()) == 0.0  # padded row


def test_binary_mask_where_instances_are_required_is_named(tmp_path):
    def two_blobs(r):
        lab = np.zeros((20, 24), np.uint8)
        lab[2:6, 2:6] = 255
        lab[10:15, 10:15] = 255
        return lab

    root = _folder(tmp_path, label_fn=two_blobs)
    with pytest.raises(DensemedError, match=r"c0\.png"):
        load_cases(_cfg(root, "data.instances=true"))


def test_target_spacing_resamples_images_linearly_and_labels_by_nearest(tmp_path):
    nib = pytest.importorskip("nibabel")
    from densemed import config
    from densemed.data.dataset import read_image_case, read_label_case

    img = np.arange(4 * 3 * 3, dtype=np.float32).reshape(4, 3, 3)
    lab = np.zeros((4, 3, 3), np.uint8)
    lab[2:] = 1
    affine = np.diag([2.0, 1.0, 1.0, 1.0])  # 2 mm along the first axis
    nib.save(nib.Nifti1Image(img, affine), tmp_path / "i.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), tmp_path / "l.nii.gz")
    cfg = config.load(None, ["data.dims=3", "data.patch_size=[4,4,4]", "data.target_spacing=[1,1,1]",
                             "data.normalize=none"])
    image, _ = read_image_case(cfg, tmp_path / "i.nii.gz")
    label, _ = read_label_case(cfg, tmp_path / "l.nii.gz", image.shape[1:])
    assert image.shape == (1, 8, 3, 3) and label.shape == (8, 3, 3)
    # linear along the resampled axis: neighbouring 1 mm samples of one column change by at most one
    # 2 mm step (9 here), and the values stay within the original range
    col = image[0, :, 0, 0]
    assert np.all(np.abs(np.diff(col)) <= 9 + 1e-4) and col.min() >= 0 and col.max() <= 27 + 1e-4
    assert set(np.unique(label)) == {0, 1} and label[:3].max() == 0 and label[-3:].min() == 1


def test_target_spacing_halves_png_images_by_2x2_means_and_labels_by_nearest(tmp_path):
    # PNGs carry no spacing: one unit per pixel, so target spacing [2, 2] halves each side
    from PIL import Image

    from densemed import config
    from densemed.data.dataset import read_image_case, read_label_case

    img = (np.arange(4 * 6).reshape(4, 6) * 10).astype(np.uint8)
    lab = np.kron(np.array([[0, 1, 2], [3, 0, 4]], np.uint8), np.ones((2, 2), np.uint8))  # ids in 2x2 blocks
    Image.fromarray(img).save(tmp_path / "i.png")
    Image.fromarray(lab).save(tmp_path / "l.png")
    cfg = config.load(None, ["data.dims=2", "data.patch_size=[2,2]", "data.target_spacing=[2,2]",
                             "data.normalize=none"])
    image, _ = read_image_case(cfg, tmp_path / "i.png")
    label, _ = read_label_case(cfg, tmp_path / "l.png", image.shape[1:])
    means = img.reshape(2, 2, 3, 2).mean(axis=(1, 3))  # pixel centres matched: linear = the 2x2 block mean
    np.testing.assert_allclose(image[0], means, atol=1e-4)
    np.testing.assert_array_equal(label, [[0, 1, 2], [3, 0, 4]])
