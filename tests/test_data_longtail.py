"""Long-tailed counts, split selection and split manifests (`ltjax.data.longtail`, `ltjax.data.splits`)."""
import json

import numpy as np
import pytest

from ltjax.data.longtail import longtail_counts
from ltjax.data.source import ArraySource
from ltjax.data.splits import (
    ManifestError,
    SplitManifest,
    held_out_validation_indices,
    select_longtail_indices,
)

# Total train images of the exponential splits, as published (LDAM-DRW, IB, FFDS, KPS).
LITERATURE_TOTALS = [
    # (n_max, num_classes, imbalance_factor, total)
    (5000, 10, 100, 12406),
    (5000, 10, 50, 13996),
    (5000, 10, 10, 20431),
    (500, 100, 100, 10847),
    (500, 100, 50, 12608),
    (500, 100, 10, 19573),
    (500, 200, 100, 21549),
    (500, 200, 50, 25082),
    (500, 200, 10, 39072),
]


@pytest.mark.parametrize("n_max, num_classes, imbalance_factor, total", LITERATURE_TOTALS)
def test_exp_counts_match_literature_totals(n_max, num_classes, imbalance_factor, total):
    counts = longtail_counts(n_max, num_classes, imbalance_factor)
    assert counts.dtype == np.int64
    assert counts.sum() == total
    assert counts[0] == n_max and counts[-1] == n_max // imbalance_factor
    assert (np.diff(counts) <= 0).all()


def test_exp_counts_cifar10_if100():
    assert longtail_counts(5000, 10, 100).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_exp_counts_equal_ldam_expression():
    # LDAM-DRW writes the same split with the inverse factor: int(img_max * imb_factor ** (c / (C - 1.0))).
    for n_max, num_classes, imbalance_factor, _ in LITERATURE_TOTALS:
        ldam = [int(n_max * (1 / imbalance_factor) ** (c / (num_classes - 1.0))) for c in range(num_classes)]
        assert longtail_counts(n_max, num_classes, imbalance_factor).tolist() == ldam


def test_balanced_and_single_class_edge_cases():
    for profile in ("exp", "pareto"):
        assert longtail_counts(7, 5, 1, profile).tolist() == [7] * 5
        assert longtail_counts(7, 1, 10, profile).tolist() == [7]


def test_step_counts():
    assert longtail_counts(5000, 10, 100, "step").tolist() == [5000] * 5 + [50] * 5
    # floor(0.3 * 10) = 3 minority classes; int(500 / 7) = 71.
    assert longtail_counts(500, 10, 7, "step", minority_fraction=0.3).tolist() == [500] * 7 + [71] * 3
    # Odd C: floor(0.5 * 5) = 2 minority classes.
    assert longtail_counts(10, 5, 2, "step").tolist() == [10, 10, 10, 5, 5]


def test_pareto_counts():
    # C = 10, IF = 100: the exponent log(IF) / log(C) is 2, so n_c = n_max / (c + 1) ** 2, truncated.
    counts = longtail_counts(1000, 10, 100, "pareto")
    assert counts.tolist() == [1000, 250, 111, 62, 40, 27, 20, 15, 12, 10]
    counts = longtail_counts(500, 100, 100, "pareto")
    assert counts[0] == 500 and counts[-1] == 5
    assert (np.diff(counts) <= 0).all()
    # Steeper at the head than the exponential profile with the same ends.
    assert counts[1] == 250 and longtail_counts(500, 100, 100)[1] == 477


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((5000, 10, 0.5), {}, r"imbalance_factor must be >= 1"),
        ((5000, 10, float("nan")), {}, r"imbalance_factor must be >= 1"),
        ((5000, 0, 100), {}, r"num_classes must be >= 1"),
        ((0, 10, 100), {}, r"n_max must be >= 1"),
        ((50.5, 10, 100), {}, r"n_max must be an integer"),
        ((5000, 10, 100), {"profile": "linear"}, r"unknown profile 'linear'; valid profiles: exp, step, pareto"),
        ((5000, 10, 100), {"minority_fraction": 0.3}, r"profile 'exp' got unknown options \['minority_fraction'\]"),
        ((5000, 10, 100), {"profile": "step", "minority_fraction": 1.0}, r"minority_fraction must lie in \(0, 1\)"),
        ((5000, 10, 100), {"profile": "step", "minority_fraction": 0.05}, r"leaves no minority class"),
        ((50, 10, 100), {},
         r"gives classes \[8, 9\] no images .*smaller imbalance factor \(dataset\.imbalance_factor <= 50\) "
         r"or a larger n_max"),
        ((50, 10, 100), {"profile": "step"}, r"gives classes \[5, 6, 7, 8, 9\] no images"),
    ],
)
def test_longtail_counts_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        longtail_counts(*args, **kwargs)


def _balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int32)


def _ldam_gen_imbalanced_data(labels: np.ndarray, class_counts, rand_number: int) -> np.ndarray:
    """LDAM-DRW's recipe, written as the repository runs it: global seed once, then shuffle class by class."""
    np.random.seed(rand_number)
    selected = []
    for the_class, the_img_num in zip(np.unique(labels), class_counts):
        idx = np.where(labels == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return np.concatenate(selected)


def test_select_longtail_matches_ldam_recipe_and_leaves_global_rng_alone():
    labels = _balanced_labels(10, 300)
    counts = longtail_counts(300, 10, 100)
    global_state = np.random.get_state()
    try:
        for seed in (0, 1, 123):
            expected = _ldam_gen_imbalanced_data(labels, counts, seed)
            np.random.seed(999)
            selected = select_longtail_indices(labels, counts, seed)
            assert np.random.randint(1 << 30) == np.random.RandomState(999).randint(1 << 30)
            np.testing.assert_array_equal(selected, expected)
    finally:
        np.random.set_state(global_state)
    assert selected.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels[selected], minlength=10), counts)
    assert len(np.unique(selected)) == len(selected)


def test_select_longtail_is_deterministic_and_seed_dependent():
    labels = _balanced_labels(5, 100)
    counts = longtail_counts(100, 5, 10)
    first = select_longtail_indices(labels, counts, seed=3)
    np.testing.assert_array_equal(first, select_longtail_indices(labels, counts, seed=3))
    assert not np.array_equal(first, select_longtail_indices(labels, counts, seed=4))


def test_select_longtail_first_order_keeps_file_order():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2, 0, 2])
    selected = select_longtail_indices(labels, [3, 2, 1], seed=0, order="first")
    np.testing.assert_array_equal(selected, [0, 2, 4, 1, 3, 6])


def test_select_longtail_errors():
    labels = np.array([0, 0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match=r"class 2 \('truck'\) has 1 images but the long-tailed split asks for 2; "
                                         r"check that the dataset copy is complete"):
        select_longtail_indices(labels, [3, 2, 2], class_names=("plane", "car", "truck"))
    with pytest.raises(ValueError, match=r"class 1 has 2 images but the long-tailed split asks for 3"):
        select_longtail_indices(labels, [1, 3, 1])
    with pytest.raises(ValueError, match=r"unknown order 'sorted'; valid orders: shuffle, first"):
        select_longtail_indices(labels, [1, 1, 1], order="sorted")
    with pytest.raises(ValueError, match=r"class_counts must be >= 0"):
        select_longtail_indices(labels, [1, -1, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        select_longtail_indices(labels, [1, 1])


def test_held_out_validation_is_balanced_disjoint_and_deterministic():
    labels = _balanced_labels(10, 200)
    train = select_longtail_indices(labels, longtail_counts(150, 10, 10), seed=0)
    validation = held_out_validation_indices(labels, train, per_class=20, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[validation]), [20] * 10)
    assert not set(validation) & set(train)
    np.testing.assert_array_equal(validation, held_out_validation_indices(labels, train, 20, seed=0))
    assert not np.array_equal(validation, held_out_validation_indices(labels, train, 20, seed=1))
    # Class-major order.
    assert (np.diff(labels[validation]) >= 0).all()


def test_held_out_validation_errors():
    labels = _balanced_labels(3, 10)
    train = select_longtail_indices(labels, [10, 5, 2], seed=0)
    with pytest.raises(ValueError, match=r"class 0 \('a'\) has 0 images left after the long-tailed split but the "
                                         r"validation split asks for 4"):
        held_out_validation_indices(labels, train, 4, seed=0, class_names=("a", "b", "c"))
    with pytest.raises(ValueError, match=r"class 3 has 0 images left"):
        held_out_validation_indices(labels, np.zeros(0, np.int64), 4, num_classes=4)
    with pytest.raises(ValueError, match=r"per_class must be >= 1"):
        held_out_validation_indices(labels, train, 0)


def _toy_source(num_classes: int = 4, per_class: int = 30):
    labels = _balanced_labels(num_classes, per_class, seed=7)
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 2, 2, 3), dtype=np.uint8)
    names = tuple(f"class_{c}" for c in range(num_classes))
    image_ids = tuple(f"img-{i:03d}" for i in range(len(labels)))
    return ArraySource(images, labels, num_classes, names), image_ids


def _toy_manifest(source, image_ids, indices):
    return SplitManifest.from_indices(
        dataset="toy",
        split="train",
        labels=source.labels,
        image_ids=image_ids,
        indices=indices,
        num_classes=source.num_classes,
        class_names=source.class_names,
        parameters={"imbalance_factor": 10.0, "profile": "exp", "seed": 0, "sizes": (1, 2)},
    )


def test_manifest_round_trip_reproduces_the_split(tmp_path):
    source, image_ids = _toy_source()
    indices = select_longtail_indices(source.labels, longtail_counts(30, 4, 10), seed=5)
    manifest = _toy_manifest(source, image_ids, indices)
    np.testing.assert_array_equal(manifest.class_counts, [30, 13, 6, 3])
    path = manifest.to_json(tmp_path / "train.json")
    loaded = SplitManifest.load(path)
    assert loaded == manifest and loaded.sha256 == manifest.sha256
    assert loaded.parameters["sizes"] == [1, 2]
    np.testing.assert_array_equal(loaded.indices(image_ids), indices)
    split = loaded.apply(source, image_ids)
    np.testing.assert_array_equal(split.labels, source.labels[indices])
    np.testing.assert_array_equal(split.images, source.images[indices])
    # Canonical: writing again gives the same bytes; the stored hash is the hash of the content.
    text = path.read_text()
    assert loaded.to_json(tmp_path / "again.json").read_text() == text
    assert json.loads(text)["sha256"] == manifest.sha256
    assert "\n" not in text.rstrip("\n") and ": " not in text


def test_manifest_applies_to_a_reordered_copy():
    source, image_ids = _toy_source()
    indices = select_longtail_indices(source.labels, [5, 4, 3, 2], seed=0)
    manifest = _toy_manifest(source, image_ids, indices)
    permutation = np.random.default_rng(3).permutation(len(source))
    copy = source.subset(permutation)
    copy_ids = tuple(image_ids[i] for i in permutation)
    split = manifest.apply(copy, copy_ids)
    np.testing.assert_array_equal(split.images, source.images[indices])


def test_manifest_detects_edits_and_corruption(tmp_path):
    source, image_ids = _toy_source()
    manifest = _toy_manifest(source, image_ids, select_longtail_indices(source.labels, [5, 4, 3, 2]))
    path = manifest.to_json(tmp_path / "manifest.json")
    edited = tmp_path / "edited.json"
    edited.write_text(path.read_text().replace('"seed":0', '"seed":1'))
    with pytest.raises(ManifestError, match=r"split manifest .*edited\.json fails its SHA-256 check"):
        SplitManifest.load(edited)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(path.read_text()[:100])
    with pytest.raises(ManifestError, match=r"split manifest .*truncated\.json is corrupt"):
        SplitManifest.load(truncated)
    missing_field = tmp_path / "missing.json"
    missing_field.write_text(json.dumps({"content": {"format": "ltjax.split_manifest"}, "sha256": "0"}))
    with pytest.raises(ManifestError, match=r"split manifest .*missing\.json is corrupt: missing field 'version'"):
        SplitManifest.load(missing_field)
    other_format = tmp_path / "other.json"
    other_format.write_text(path.read_text().replace("ltjax.split_manifest", "something.else"))
    with pytest.raises(ManifestError, match=r"split manifest .*other\.json is corrupt: unsupported format 'something"):
        SplitManifest.load(other_format)
    with pytest.raises(ManifestError, match=r"cannot read split manifest .*absent\.json"):
        SplitManifest.load(tmp_path / "absent.json")


def test_manifest_apply_errors():
    source, image_ids = _toy_source()
    indices = select_longtail_indices(source.labels, [5, 4, 3, 2])
    manifest = _toy_manifest(source, image_ids, indices)
    partial_ids = tuple("other" if i == indices[-1] else image_id for i, image_id in enumerate(image_ids))
    with pytest.raises(ManifestError, match=r"manifest toy/train lists 1 image ids that this copy of the dataset "
                                            r"lacks \(first: \['img-\d+'\]\); use a complete copy"):
        manifest.apply(source, partial_ids)
    relabelled = ArraySource(source.images, (source.labels + 1) % 4, 4, source.class_names)
    with pytest.raises(ManifestError, match=r"14 images have other labels in this source"):
        manifest.apply(relabelled, image_ids)
    with pytest.raises(ManifestError, match=r"image ids for a source of"):
        manifest.apply(source, image_ids[:-1])


def test_manifest_validation():
    with pytest.raises(ManifestError, match=r"image ids repeat"):
        SplitManifest("toy", "train", 2, ("a", "b"), (("x",), ("x",)), {})
    with pytest.raises(ManifestError, match=r"num_classes=3 but 2 class names"):
        SplitManifest("toy", "train", 3, ("a", "b"), (("x",), ("y",)), {})
    with pytest.raises(ManifestError, match=r"JSON-serialisable"):
        SplitManifest("toy", "train", 1, ("a",), (("x",),), {"bad": object()})
