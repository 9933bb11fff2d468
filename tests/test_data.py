"""The tfds pipelines: shapes, dtypes, labels, normalization, augmentation, and errors.

CIFAR-10 and ImageNet run on `tfds.testing.mock_data`; Fashion-MNIST on Debian's files.
"""

import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from apps import data


def _first_batch(*args, **kwargs):
    images, labels = next(iter(data.load(*args, **kwargs)))
    return images.numpy(), labels.numpy()


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=8):
        yield


@pytest.mark.parametrize(
    ("name", "split", "shape", "num_classes"),
    [
        ("cifar10", "train", (32, 32, 3), 10),
        ("cifar10", "test", (32, 32, 3), 10),
        ("imagenet2012", "train", (224, 224, 3), 1000),
        ("imagenet2012", "validation", (224, 224, 3), 1000),
    ],
)
def test_mock_pipelines_give_normalized_images_and_labels(
    mock_tfds, name, split, shape, num_classes
):
    assert data.info(name) == (shape, num_classes)
    images, labels = _first_batch(name, split, batch_size=4, seed=0)
    assert images.shape == (4, *shape) and images.dtype == np.float32
    assert labels.dtype == np.int64 and np.all((labels >= 0) & (labels < num_classes))
    # Mock images are uniform in [0, 255]: normalized, they are roughly centred.
    assert abs(images.mean()) < 0.5 and 0.5 < images.std() < 1.6


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_augmentation_changes_train_images_only(mock_tfds, name):
    eval_split = "validation" if name == "imagenet2012" else "test"
    # Mocked splits hold the same examples, so train and eval images can be compared.
    train, _ = _first_batch(name, "train", batch_size=8, shuffle=False, seed=0)
    train_again, _ = _first_batch(name, "train", batch_size=8, shuffle=False, seed=0)
    evaluation, _ = _first_batch(name, eval_split, batch_size=8)
    evaluation_again, _ = _first_batch(name, eval_split, batch_size=8)
    np.testing.assert_array_equal(evaluation, evaluation_again)
    np.testing.assert_array_equal(train, train_again)  # reproducible given the seed
    changed = [not np.allclose(a, b) for a, b in zip(train, evaluation)]
    assert sum(changed) >= 6


def test_cifar_train_images_are_padded_crops(mock_tfds):
    evaluation, _ = _first_batch("cifar10", "test", batch_size=8)
    train, _ = _first_batch("cifar10", "train", batch_size=8, shuffle=False, seed=0)
    padding = -np.array([0.4914, 0.4822, 0.4465]) / np.array([0.2470, 0.2435, 0.2616])
    for augmented, original in zip(train, evaluation):
        # Somewhere inside the 4-pixel zero padding lies the original or its mirror image.
        padded = np.broadcast_to(padding, (40, 40, 3)).astype(np.float32).copy()
        padded[4:36, 4:36] = original
        candidates = [
            image[dy : dy + 32, dx : dx + 32]
            for image in (padded, padded[:, ::-1])
            for dy in range(9)
            for dx in range(9)
        ]
        assert any(np.allclose(augmented, c, atol=1e-5) for c in candidates)


def test_batching_defaults_drop_the_last_train_batch_only(mock_tfds):
    # 8 mock examples in batches of 3: training drops the remainder, evaluation keeps it.
    assert data.load("cifar10", "train", batch_size=3).cardinality() == 2
    assert data.load("cifar10", "test", batch_size=3).cardinality() == 3
    assert data.load("cifar10", "test", batch_size=3, limit=5).cardinality() == 2


def _epochs(dataset, epochs: int, batches: int) -> list[np.ndarray]:
    """The images of `epochs` consecutive epochs of `batches` batches, one array each."""
    iterator = iter(dataset)
    return [
        np.concatenate([next(iterator)[0].numpy() for _ in range(batches)]) for _ in range(epochs)
    ]


def _same_images(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` and `b` hold the same images, in any order."""
    return sorted(image.tobytes() for image in a) == sorted(image.tobytes() for image in b)


def test_an_epoch_is_the_same_whichever_epoch_the_dataset_starts_from():
    common = dict(batch_size=8, seed=3)
    with tfds.testing.mock_data(num_examples=48):
        batches = int(data.load("cifar10", "train", **common).cardinality())
        assert batches == 6
        from_start = _epochs(data.load("cifar10", "train", first_epoch=0, **common), 4, batches)
        resumed = _epochs(data.load("cifar10", "train", first_epoch=2, **common), 2, batches)
        # Each option alone: the order changes, and the augmentations do.
        plain = dict(common, training=False, shuffle=True)
        orders = _epochs(data.load("cifar10", "train", first_epoch=0, **plain), 2, batches)
        fixed = dict(common, shuffle=False)
        augmentations = _epochs(data.load("cifar10", "train", first_epoch=0, **fixed), 2, batches)
    for epoch in (2, 3):
        np.testing.assert_array_equal(resumed[epoch - 2], from_start[epoch])
    for epoch in range(3):
        assert not np.allclose(from_start[epoch], from_start[epoch + 1])
    assert _same_images(*orders) and not np.array_equal(*orders)
    differ = [not np.allclose(a, b) for a, b in zip(*augmentations)]
    assert sum(differ) >= 40  # of 48 images, each cropped and flipped anew


def test_each_pass_over_a_one_epoch_dataset_is_a_new_epoch():
    common = dict(batch_size=8, seed=3, training=False, shuffle=True)
    with tfds.testing.mock_data(num_examples=48):
        train = data.load("cifar10", "train", **common)
        passes = [np.concatenate([images for images, _ in train]) for _ in range(2)]
        again = data.load("cifar10", "train", **common)
        passes_again = [np.concatenate([images for images, _ in again]) for _ in range(2)]
    assert _same_images(*passes) and not np.array_equal(*passes)
    # A new dataset object draws the same passes again.
    for first, second in zip(passes, passes_again):
        np.testing.assert_array_equal(first, second)


@pytest.fixture(scope="session")
def fashion_mnist_data_dir(tmp_path_factory):
    """A tfds folder with fashion_mnist prepared from Debian's files (once per session)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    data.load("fashion_mnist", "test", batch_size=1, data_dir=data_dir)
    return data_dir


def test_fashion_mnist_from_debian_files(fashion_mnist_data_dir):
    assert data.info("fashion_mnist") == ((28, 28, 1), 10)
    train = data.load("fashion_mnist", "train", batch_size=1, data_dir=fashion_mnist_data_dir)
    test = data.load("fashion_mnist", "test", batch_size=1, data_dir=fashion_mnist_data_dir)
    assert int(train.cardinality()) == 60_000
    assert int(test.cardinality()) == 10_000
    images, labels = _first_batch(
        "fashion_mnist", "test", batch_size=1000, data_dir=fashion_mnist_data_dir
    )
    assert images.shape == (1000, 28, 28, 1) and images.dtype == np.float32
    assert set(np.unique(labels)) == set(range(10))
    assert abs(images.mean()) < 0.1 and images.std() == pytest.approx(1.0, abs=0.1)


def test_fashion_mnist_train_augmentation(fashion_mnist_data_dir):
    common = dict(batch_size=16, data_dir=fashion_mnist_data_dir, shuffle=False, limit=16)
    plain, labels = _first_batch("fashion_mnist", "train", training=False, **common)
    augmented, augmented_labels = _first_batch("fashion_mnist", "train", seed=1, **common)
    np.testing.assert_array_equal(labels, augmented_labels)
    assert sum(not np.allclose(a, b) for a, b in zip(plain, augmented)) >= 12


def test_prepared_fashion_mnist_loads_without_the_files(fashion_mnist_data_dir, tmp_path):
    test = data.load(
        "fashion_mnist",
        "test",
        batch_size=100,
        data_dir=fashion_mnist_data_dir,
        fashion_mnist_dir=tmp_path / "missing",
    )
    assert int(test.cardinality()) == 100


def test_missing_fashion_mnist_files_say_how_to_get_them(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load(
            "fashion_mnist",
            "train",
            batch_size=8,
            data_dir=tmp_path / "tfds",
            fashion_mnist_dir=tmp_path / "missing",
        )
    assert issubclass(data.DataNotFoundError, FileNotFoundError)


def test_missing_imagenet_says_where_the_archives_go(tmp_path):
    manual_dir = tmp_path / "downloads" / "manual"
    with pytest.raises(data.DataNotFoundError, match="ILSVRC2012_img_train.tar") as error:
        data.load("imagenet2012", "train", batch_size=8, data_dir=tmp_path)
    assert str(manual_dir) in str(error.value)


def test_unknown_dataset_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"'mnist'.*fashion_mnist.*cifar10.*imagenet2012"):
        data.load("mnist", "train", batch_size=8)
    with pytest.raises(ValueError, match=r"'svhn'"):
        data.info("svhn")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, r"batch_size=0"),
        ({"batch_size": 8, "limit": -1}, r"limit=-1"),
        ({"batch_size": 8, "first_epoch": -1}, r"first_epoch=-1"),
        ({"batch_size": 8, "first_epoch": 1.0}, r"first_epoch=1\.0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load("cifar10", "train", **kwargs)


def test_preparing_lets_one_process_prepare_a_dataset_at_a_time(tmp_path):
    # flock locks belong to open files: two threads of one process exclude each other as
    # two processes would.
    events = []
    first_inside = threading.Event()

    def first():
        with data._preparing(tmp_path, "fashion_mnist"):
            events.append("first in")
            first_inside.set()
            time.sleep(0.5)
            events.append("first out")

    def second():
        first_inside.wait(5)
        with data._preparing(tmp_path, "fashion_mnist"):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert events == ["first in", "first out", "second in"]
    assert (tmp_path / ".fashion_mnist.lock").is_file()
