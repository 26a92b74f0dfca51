"""ICText-LT loader on a generated folder in the authors' layout (the real dataset is distributed under an NDA)."""
import io
import json
import pathlib
import re
import string

import numpy as np
import pytest
from PIL import Image

from ltjax.data import ictext
from ltjax.data.ictext import CLASS_CHARACTERS, load_ictext_lt
from ltjax.data.longtail import longtail_counts

LOWER_CASE_LINES = 5


def _colour(character: str) -> tuple[int, int, int]:
    code = ord(character)
    return (code * 3 % 256, code * 7 % 256, code * 11 % 256)


def _write_split(root: pathlib.Path, folder: str, images_per_class, separator: str = " ") -> list[str]:
    """Writes `<folder>/imgs/*.png` and `<folder>/<folder>.txt`; returns the list's characters in line order."""
    image_dir = root / folder / "imgs"
    image_dir.mkdir(parents=True)
    encoded = {}
    lines, characters = [], []
    # Interleave classes so the list is not grouped by class, as in a real crop list.
    for k in range(max(images_per_class)):
        for class_index, character in enumerate(CLASS_CHARACTERS):
            if k < images_per_class[class_index]:
                lines.append(f"{folder}_{character}_{k}.png{separator}{character}")
                characters.append(character)
        if k < LOWER_CASE_LINES:
            lines.append(f"{folder}_lower_{k}.png{separator}{string.ascii_lowercase[k]}")
            characters.append(string.ascii_lowercase[k])
    for line in lines:
        file_name, character = re.split(r"[\s,]+", line)
        if character not in encoded:
            buffer = io.BytesIO()
            Image.new("RGB", (12, 20), _colour(character)).save(buffer, format="PNG")
            encoded[character] = buffer.getvalue()
        (image_dir / file_name).write_bytes(encoded[character])
    (root / folder / f"{folder}.txt").write_text("\n".join(lines) + "\n")
    return characters


TRAIN_COUNTS = [10 + c % 4 for c in range(36)]
TEST_COUNTS = [3 + c % 3 for c in range(36)]


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ictext2021"
    train_characters = _write_split(root, "train", TRAIN_COUNTS)
    test_characters = _write_split(root, "val", TEST_COUNTS)
    return root, train_characters, test_characters


def _reference_draw(characters, class_characters, counts, seed=0):
    """The reference code's selection, written its way: global seed, indices into the full list with lower case."""
    index_of = {character: index for index, character in enumerate(class_characters)}
    index_of.update({character: 36 + k for k, character in enumerate(string.ascii_lowercase)})
    targets = np.array([index_of[character] for character in characters])
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        kept = []
        for class_index, count in enumerate(counts):
            members = np.where(targets == class_index)[0]
            np.random.shuffle(members)
            kept.extend(members[:count].tolist())
    finally:
        np.random.set_state(state)
    return kept


def test_natural_train_split(dataset):
    root, _, _ = dataset
    source = load_ictext_lt(root, "train")
    assert source.num_classes == 36 and source.class_names == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    np.testing.assert_array_equal(np.bincount(source.labels, minlength=36), TRAIN_COUNTS)  # lower case skipped
    assert len(source) == sum(TRAIN_COUNTS)
    for index in [0, 25, 26, 35]:  # A, Z, 0, 9 in the first interleaved round
        character = CLASS_CHARACTERS[index]
        assert source.paths[index] == root / "train" / "imgs" / f"train_{character}_0.png"
        assert source.labels[index] == index


def test_images_decode(dataset):
    root, _, _ = dataset
    source = load_ictext_lt(root, "train")
    for index in [0, 30]:
        image, label = source[index]
        assert image.shape == (20, 12, 3) and image.dtype == np.uint8
        assert tuple(image[0, 0]) == _colour(source.class_names[label])


def test_test_split_is_balanced_with_the_reference_draw(dataset):
    root, _, test_characters = dataset
    source = load_ictext_lt(root, "test")
    np.testing.assert_array_equal(np.bincount(source.labels, minlength=36), np.full(36, min(TEST_COUNTS)))
    lines = (root / "val" / "val.txt").read_text().splitlines()
    expected = [lines[i].split()[0] for i in _reference_draw(test_characters, CLASS_CHARACTERS, [3] * 36)]
    assert [path.name for path in source.paths] == expected
    assert all(path.parent == root / "val" / "imgs" for path in source.paths)


def test_resampled_train_follows_the_exponential_profile(dataset, monkeypatch):
    # A head of 8 instead of 3200 lets a small folder hold the profile; the draw is the same code.
    monkeypatch.setattr(ictext, "HEAD_CLASS_IMAGES", 8)
    root, train_characters, _ = dataset
    counts = longtail_counts(8, 36, 2)
    source = load_ictext_lt(root, "train", imbalance_factor=2, seed=3)
    np.testing.assert_array_equal(np.bincount(source.labels, minlength=36), counts)
    lines = (root / "train" / "train.txt").read_text().splitlines()
    expected = [lines[i].split()[0] for i in _reference_draw(train_characters, CLASS_CHARACTERS, counts, seed=3)]
    assert [path.name for path in source.paths] == expected
    assert load_ictext_lt(root, "train", imbalance_factor=2, seed=4).paths != source.paths


def test_published_profile_needs_more_images_than_the_folder_has(dataset):
    root, _, _ = dataset
    with pytest.raises(ValueError, match=r"class 0 \('A'\) has 10 images .* imbalance_factor=100 needs 3200"):
        load_ictext_lt(root, "train", imbalance_factor=100)


def test_authors_mapping_file_sets_the_class_order(dataset):
    root, _, _ = dataset
    order = string.digits + string.ascii_uppercase
    # Values as strings, as the reference code's int() cast allows, and the lower case after the 36 classes.
    mapping = {character: str(index) for index, character in enumerate(order)}
    mapping.update({character: 36 + k for k, character in enumerate(string.ascii_lowercase)})
    (root / "char_2_idx.json").write_text(json.dumps(mapping))
    source = load_ictext_lt(root, "train")
    assert source.class_names == tuple(order)
    assert source.labels[0] == order.index("A") and source.labels[26] == order.index("0")


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({character: index for index, character in enumerate(CLASS_CHARACTERS[:-1])}, "KeyError"),
        ({character: index + 1 for index, character in enumerate(CLASS_CHARACTERS)}, "not 0..35"),
        ({character: "x" for character in CLASS_CHARACTERS}, "ValueError"),
    ],
)
def test_damaged_mapping_file(dataset, mapping, message):
    root, _, _ = dataset
    (root / "char_2_idx.json").write_text(json.dumps(mapping))
    with pytest.raises(ValueError, match=f"char_2_idx.json .*{message}"):
        load_ictext_lt(root, "train")


@pytest.mark.parametrize(
    "line, message",
    [
        ("train_A_0.png #", r"line 2: unknown character '#'"),
        ("train_A_0.png AB", r"line 2: unknown character 'AB'"),
        ("train_A_0.png", r"line 2: expected '<file> <char>'"),
    ],
)
def test_bad_list_lines(dataset, line, message):
    root, _, _ = dataset
    (root / "train" / "train.txt").write_text(f"train_A_0.png A\n{line}\n")
    with pytest.raises(ValueError, match=message):
        load_ictext_lt(root, "train")


def test_comma_separated_list(tmp_path):
    root = tmp_path / "ictext2021"
    _write_split(root, "train", TRAIN_COUNTS, separator=", ")
    assert len(load_ictext_lt(root, "train")) == sum(TRAIN_COUNTS)


def test_missing_image_names_file_and_line(dataset):
    root, _, _ = dataset
    missing = root / "train" / "imgs" / "train_B_0.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"train.txt, line 2 names .*train_B_0.png, which is missing"):
        load_ictext_lt(root, "train")


def test_missing_folders_and_lists(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(FileNotFoundError, match="ICText-LT folder .*nowhere does not exist"):
        load_ictext_lt(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"list .*other.txt is missing"):
        load_ictext_lt(root, "train", list_file=root / "other.txt")
    for file in (root / "val" / "imgs").iterdir():
        file.unlink()
    (root / "val" / "imgs").rmdir()
    with pytest.raises(FileNotFoundError, match=r"image folder .*val/imgs is missing"):
        load_ictext_lt(root, "test")
    (root / "val" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"list .*val/val.txt is missing"):
        load_ictext_lt(root, "test")


def test_test_split_needs_every_class(dataset):
    root, _, _ = dataset
    (root / "val" / "val.txt").write_text("val_A_0.png A\n")
    with pytest.raises(ValueError, match="class 'B' has no images"):
        load_ictext_lt(root, "test")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(split="val"), "split must be 'train' or 'test'"),
        (dict(split="test", imbalance_factor=100), "imbalance_factor applies to the train split only"),
    ],
)
def test_bad_arguments(dataset, arguments, message):
    root, _, _ = dataset
    with pytest.raises(ValueError, match=message):
        load_ictext_lt(root, **arguments)
