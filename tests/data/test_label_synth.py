"""New label maps: condition channels, recombination invariants, deformation, seeds, real instance maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from densemed.data.label_synth import (
    LabelSynthesizer,
    boundaries,
    condition_channels,
    deform,
    recombine,
    relabel_sequential,
)
from densemed.data.synthetic import touching_cells
from densemed.errors import DensemedError


def cells(seed: int = 0, size: int = 96) -> np.ndarray:
    return touching_cells(size, np.random.default_rng(seed))[1].astype(np.int32)


def sizes(inst: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


# ------------------------------------------------------------------------------- conditions
def test_boundaries_hand_values_mark_both_sides_of_every_id_change():
    inst = np.array([[1, 1, 2],
                     [0, 1, 2],
                     [0, 0, 0]])
    # (2, 0) is the only pixel whose 4-neighbours all share its id
    assert boundaries(inst).astype(int).tolist() == [[1, 1, 1],
                                                     [1, 1, 1],
                                                     [0, 1, 1]]


@pytest.mark.parametrize("shape", [(40, 52), (12, 14, 10)])
def test_boundaries_equal_skimage_thick_boundaries(shape):
    inst = ndi.label(np.random.default_rng(1).random(shape) > 0.6)[0]
    np.testing.assert_array_equal(boundaries(inst), find_boundaries(inst, connectivity=1, mode="thick"))


def test_condition_channels_one_hot_plus_boundary_for_touching_instances():
    inst = np.array([[1, 1, 2, 2],
                     [1, 1, 2, 2]])
    c = condition_channels(inst, num_classes=2, instances=True)
    assert c.shape == (3, 2, 4) and c.dtype == np.float32
    assert c[0].sum() == 0 and c[1].sum() == 8  # all foreground: the classes alone cannot separate them
    assert c[2].tolist() == [[0, 1, 1, 0], [0, 1, 1, 0]]


def test_condition_channels_for_class_maps_are_one_hot():
    lab = np.array([[0, 2], [1, 2]])
    c = condition_channels(lab, num_classes=3, instances=False)
    assert c.shape == (3, 2, 2)
    np.testing.assert_array_equal(c.argmax(0), lab)
    np.testing.assert_array_equal(c.sum(0), np.ones((2, 2)))


def test_condition_channels_reject_bad_maps():
    with pytest.raises(DensemedError, match="not below"):
        condition_channels(np.array([[0, 3]]), 3, instances=False)
    with pytest.raises(DensemedError, match="2 classes"):
        condition_channels(np.array([[0, 3]]), 3, instances=True)
    with pytest.raises(DensemedError, match="integers"):
        condition_channels(np.array([[0.5]]), 2, instances=False)


# ---------------------------------------------------------------------------- recombination
def test_recombined_ids_are_sequential_and_no_object_overwrites_another():
    inst = cells(0)
    donor = cells(1)
    out, edits = recombine(inst, np.random.default_rng(0), donors=[donor], remove=0.2, move=0.7, add=3)
    assert out.dtype == inst.dtype and out.shape == inst.shape
    ids = sorted(sizes(out))
    assert ids == list(range(1, len(ids) + 1)) == [e.id for e in edits]
    # every output object has exactly its source object's pixels: nothing was painted over
    for e in edits:
        src = donor if e.source == 0 else inst
        assert sizes(out)[e.id] == sizes(src)[e.source_id], e
    assert {e.op for e in edits} >= {"keep", "move", "add"}


def test_a_moved_object_keeps_its_shape_at_its_offset():
    inst = cells(2)
    out, edits = recombine(inst, np.random.default_rng(3), remove=0.0, move=1.0, add=0)
    moved = [e for e in edits if e.op == "move"]
    assert moved
    for e in moved:
        shifted = ndi.shift((inst == e.source_id).astype(np.uint8), e.offset, order=0)
        np.testing.assert_array_equal(out == e.id, shifted.astype(bool))
        assert any(e.offset)


def test_border_objects_stay_and_kept_objects_do_not_move():
    inst = np.zeros((20, 20), np.int32)
    inst[0:4, 5:9] = 1  # touches the border: never moved
    inst[10:13, 10:13] = 2
    out, edits = recombine(inst, np.random.default_rng(0), remove=0.0, move=1.0, add=0)
    assert (out[0:4, 5:9] == 1).all() and edits[0].op == "keep"
    assert edits[1].op == "move" and (out == 2).sum() == 9


def test_gap_keeps_placed_objects_apart():
    inst = cells(4)
    gap = 2
    out, edits = recombine(inst, np.random.default_rng(5), remove=0.0, move=1.0, add=4, gap=gap)
    placed = [e.id for e in edits if e.op in ("move", "add")]
    assert placed
    for i in placed:
        grown = ndi.binary_dilation(out == i, np.ones((3, 3), bool), iterations=gap)
        assert set(np.unique(out[grown]).tolist()) <= {0, i}


def test_remove_all_gives_an_empty_map_and_bad_options_raise():
    out, edits = recombine(cells(0), np.random.default_rng(0), remove=1.0, add=0)
    assert out.max() == 0 and edits == []
    with pytest.raises(DensemedError, match="remove"):
        recombine(cells(0), np.random.default_rng(0), remove=1.5)
    with pytest.raises(DensemedError, match="add"):
        recombine(cells(0), np.random.default_rng(0), add=(3, 1))


def test_relabel_sequential_maps_ids_in_order():
    out, lut = relabel_sequential(np.array([[0, 7, 7, 3]]))
    assert out.tolist() == [[0, 2, 2, 1]] and lut == {3: 1, 7: 2}


# ------------------------------------------------------------------------------ deformation
def test_deformation_keeps_class_values_in_range_and_is_seeded():
    lab = np.zeros((48, 64), np.uint8)
    lab[10:30, 10:40] = 1
    lab[20:40, 30:60] = 2
    a = deform(lab, torch.Generator().manual_seed(0))
    b = deform(lab, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and set(np.unique(a).tolist()) <= {0, 1, 2}
    assert (a != lab).any()


def test_deformation_without_transforms_is_the_identity_and_rejects_intensity_keys():
    lab = cells(0)
    np.testing.assert_array_equal(deform(lab, torch.Generator(), {}), lab)
    with pytest.raises(DensemedError, match="geometric"):
        deform(lab, torch.Generator(), {"noise": {"p": 1.0}})


def test_deformation_works_in_3d():
    lab = np.zeros((12, 14, 10), np.int64)
    lab[3:8, 4:9, 2:7] = 5
    out = deform(lab, torch.Generator().manual_seed(1))
    assert out.shape == lab.shape and set(np.unique(out).tolist()) <= {0, 5}


# ---------------------------------------------------------------------------- synthesizer
def test_synthesizer_makes_a_new_valid_instance_layout_reproducibly():
    inst, donors = cells(0), [cells(1), cells(2)]
    synth = LabelSynthesizer(instances=True)
    a = synth(inst, seed=3, donors=donors)
    np.testing.assert_array_equal(a, synth(inst, seed=3, donors=donors))
    assert (a != synth(inst, seed=4, donors=donors)).any()
    assert (a != inst).any() and a.shape == inst.shape and a.dtype == inst.dtype
    ids = sorted(sizes(a))
    assert ids == list(range(1, len(ids) + 1))
    c = condition_channels(a, 2, instances=True)
    assert c.shape == (3, *inst.shape)


def test_synthesizer_on_class_maps_only_deforms():
    lab = (cells(0) > 0).astype(np.uint8)
    out = LabelSynthesizer(instances=False)(lab, seed=0)
    assert set(np.unique(out).tolist()) <= {0, 1} and (out != lab).any()


def test_synthesizer_on_a_real_nuclei_map(real_data):
    from densemed.data.io import read_label

    inst, _ = read_label(real_data / "dsb2018_nuclei" / "labels" / sorted(
        p.name for p in (real_data / "dsb2018_nuclei" / "labels").iterdir())[0])
    inst = np.asarray(inst).squeeze()
    out = LabelSynthesizer(instances=True, deform={})(inst, seed=0)
    assert (out != inst).any()
    assert len(sizes(out)) == out.max()
