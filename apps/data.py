"""Input pipelines through tensorflow-datasets: Fashion-MNIST, CIFAR-10 and ImageNet.

One entry point, [`load`][apps.data.load], gives a batched `tf.data.Dataset` of
`(image, label)`: a float32 image normalized by the dataset's per-channel mean and
standard deviation, and an int64 label. Training splits are augmented as in the LNS
paper (§4.1): CIFAR-10 is padded by 4 pixels, randomly cropped back to 32×32 and flipped
horizontally (He et al., 2016); Fashion-MNIST likewise with a padding of 2; ImageNet gets
a random-resized crop to 224×224 and a flip (PyTorch's ImageNet example), and is
evaluated on the central 224×224 crop of the image resized to 256 on its short side.

Every training epoch draws a new order and new augmentations, and epoch $e$ is a
function of the seed and $e$ alone: a run resumed at epoch $e$ (`first_epoch=e`) reads
the batches an uninterrupted run reads there.

```python
from apps import data

train = data.load("cifar10", "train", batch_size=128)
test = data.load("cifar10", "test", batch_size=256)
input_shape, num_classes = data.info("cifar10")
```

Where the data comes from:

- `fashion_mnist` needs no network. tfds's own `fashion_mnist` builder prepares the
  dataset (in `data_dir/fashion_mnist/3.0.1`, as `tfds.load` would) from the four IDX
  `.gz` files of Debian's package `dataset-fashion-mnist` in
  `/usr/share/datasets/fashion-mnist/`: the folder is handed to tfds as its manual
  download folder, so tfds takes the files from there instead of downloading them. The
  files are re-compressed by Debian (same images and labels, gzip header without the
  file name), so the checksums tfds registered for the upstream files are replaced by
  those of the local files. Once prepared, the dataset loads like any tfds dataset,
  also on machines without the files.
- `cifar10` is downloaded by tfds on first use (network needed once).
- `imagenet2012` is a manual download: `ILSVRC2012_img_train.tar` and
  `ILSVRC2012_img_val.tar` go into `data_dir/downloads/manual/`; tfds prepares it on
  first use.

Missing data raises [`DataNotFoundError`][apps.data.DataNotFoundError] saying how to get
it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.download import checksums
from tensorflow_datasets.image_classification import mnist

__all__ = ["DATASETS", "FASHION_MNIST_DIR", "DataNotFoundError", "info", "load"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IMAGENET_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
IMAGENET_SIZE, IMAGENET_RESIZE = 224, 256


class DataNotFoundError(FileNotFoundError):
    """A dataset is neither prepared nor obtainable here; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class _Dataset:
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shuffle_buffer: int
    cache: bool  # small datasets keep their decoded uint8 images in memory
    crop_padding: int = 0  # pad-and-crop augmentation; 0 for ImageNet's resized crops


_DATASETS = {
    "fashion_mnist": _Dataset(
        (28, 28, 1), 10, (0.2860,), (0.3530,), shuffle_buffer=60_000, cache=True, crop_padding=2
    ),
    "cifar10": _Dataset(
        (32, 32, 3),
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        shuffle_buffer=50_000,
        cache=True,
        crop_padding=4,
    ),
    "imagenet2012": _Dataset(
        (IMAGENET_SIZE, IMAGENET_SIZE, 3),
        1000,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        shuffle_buffer=10_000,
        cache=False,
    ),
}
DATASETS = tuple(_DATASETS)


def _spec(name: str) -> _Dataset:
    if name not in _DATASETS:
        raise ValueError(f"Unknown dataset name={name!r}; known datasets: {list(DATASETS)}.")
    return _DATASETS[name]


def info(name: str) -> tuple[tuple[int, int, int], int]:
    """The input shape and number of classes of a dataset's pipeline.

    Args:
        name: One of `DATASETS`.

    Returns:
        `(input_shape, num_classes)`, e.g. `((32, 32, 3), 10)` for `"cifar10"`.

    Raises:
        ValueError: If `name` is not a known dataset.
    """
    spec = _spec(name)
    return spec.input_shape, spec.num_classes


def load(
    name: str,
    split: str,
    batch_size: int,
    *,
    data_dir: str | os.PathLike | None = None,
    fashion_mnist_dir: str | os.PathLike = FASHION_MNIST_DIR,
    training: bool | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    first_epoch: int | None = None,
    limit: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched `tf.data.Dataset` of `(normalized float32 image, int label)`.

    Prepares the dataset with tfds on first use (see the module docstring).

    Every epoch is drawn from the run's `seed` and the epoch's number alone: the order of
    epoch $e$ is a shuffle seeded by `(seed, e)`, and its $i$-th example is augmented
    with stateless random ops seeded by `(seed, e, i)`. Each epoch therefore has a new
    order and new augmentations, and epoch $e$ holds the same batches whichever epoch
    the dataset starts from, which is what a training run resumed at epoch $e$ needs.

    With `first_epoch=None` (the default) the dataset is one epoch long, and each pass
    over it (each `iter`, each epoch of a `fit` without `steps_per_epoch`) is an epoch
    numbered at random from the dataset's own seeded state, which a new dataset object
    starts again: reproducible for a run that is never resumed, and the form for
    evaluation splits. With `first_epoch=k` it never ends: epoch `k`, then `k + 1`, ..., each
    `batches` long, where `batches` is the size of the one-epoch dataset
    (`load(...).cardinality()` without `first_epoch`); `model.fit` then needs
    `steps_per_epoch=batches` and keeps reading the same iterator from one epoch to the
    next, so its epoch `k` (counted from 0, as `initial_epoch`) reads epoch `k`.

    Args:
        name: One of `DATASETS`: `"fashion_mnist"`, `"cifar10"`, `"imagenet2012"`.
        split: A tfds split: `"train"`, `"test"` (`"validation"` for ImageNet), or a
            slice such as `"train[:45000]"`.
        batch_size: Examples per batch.
        data_dir: tfds data folder; `None` for tfds's default (`~/tensorflow_datasets`
            or `$TFDS_DATA_DIR`).
        fashion_mnist_dir: Folder with the four Fashion-MNIST IDX `.gz` files, used to
            prepare `fashion_mnist` without a network.
        training: Whether to augment; default: whether `split` starts with `"train"`.
        shuffle: Whether to shuffle files and examples; default: `training`. The files
            are shuffled once, by `seed` (ImageNet reads them in that order in every
            epoch; the smaller datasets are held in memory after the first read), the
            examples in every epoch.
        seed: Seed of the shuffling and the augmentation; `None` for one drawn from
            TensorFlow's global random generator. With a seed the pipeline gives the
            same batches on every run.
        first_epoch: `None` for a dataset of one epoch, or the number (from 0) of the
            first epoch of an endless dataset of epochs (see above).
        limit: Use only `limit` examples of the split, the first ones read (with
            `shuffle`, in the file order drawn from `seed` for a split stored in several
            files).
        drop_remainder: Whether to drop a last, smaller batch of each epoch; default:
            `training`.

    Returns:
        A dataset of `(images, labels)` with images of shape
        `(batch, *info(name)[0])`, float32, and int64 labels in `[0, num_classes)`.

    Raises:
        ValueError: For an unknown `name`, a bad `batch_size`, `first_epoch` or `limit`.
        DataNotFoundError: If the dataset is not prepared and cannot be (no Fashion-MNIST
            files, no network for CIFAR-10, no ImageNet archives); the message says how
            to get it.

    Example:
        ```python
        train = load("fashion_mnist", "train", batch_size=128, seed=0)
        # Resuming after 3 finished epochs: epochs 3, 4, ... of the same run.
        batches = int(train.cardinality())
        rest = load("fashion_mnist", "train", batch_size=128, seed=0, first_epoch=3)
        model.fit(rest, epochs=10, initial_epoch=3, steps_per_epoch=batches)
        ```
    """
    spec = _spec(name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got batch_size={batch_size!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None, got limit={limit!r}.")
    if first_epoch is not None and (
        isinstance(first_epoch, bool) or not isinstance(first_epoch, int) or first_epoch < 0
    ):
        raise ValueError(
            f"`first_epoch` must be a non-negative integer or None, got first_epoch={first_epoch!r}."
        )
    training = split.startswith("train") if training is None else training
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    if seed is None:
        seed = int(tf.random.uniform((), maxval=2**31 - 1, dtype=tf.int64))

    builder = _prepared_builder(name, data_dir, fashion_mnist_dir)
    examples = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=shuffle,
        # The file order is drawn once: a pass over the files must not depend on how many
        # passes came before it.
        read_config=tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=False),
        # ImageNet: decode only the crop (tf.image.decode_and_crop_jpeg).
        decoders={"image": tfds.decode.SkipDecoding()} if name == "imagenet2012" else None,
    )
    if limit is not None:
        examples = examples.take(limit)
    if spec.cache:
        examples = examples.cache()  # read once, shared by every epoch
    epoch = _epoch_fn(
        examples,
        spec.shuffle_buffer if shuffle else None,
        _preprocess_fn(name, spec, training),
        batch_size,
        drop_remainder,
        seed,
    )
    if first_epoch is None:
        size = int(examples.cardinality())
        batches = size // batch_size if drop_remainder else -(-size // batch_size)
        # Each pass draws an epoch number of its own from the dataset's seeded state.
        number = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        ds = number.flat_map(epoch).apply(tf.data.experimental.assert_cardinality(batches))
    else:
        ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


# Epochs.

# The graph-level seed of each epoch's function. The epoch's own seed is the shuffle's
# operation seed; TensorFlow pairs it with the graph-level seed, which would otherwise be
# the global seed at the time `load` ran.
_GRAPH_SEED = 1


def _epoch_fn(
    examples: tf.data.Dataset,
    shuffle_buffer: int | None,
    preprocess: Callable,
    batch_size: int,
    drop_remainder: bool,
    seed: int,
) -> Callable:
    """`epoch(e)`: the batches of epoch `e`, a function of `seed` and `e` alone."""
    run_seed = tf.constant([seed, 0], tf.int64)

    def epoch(number):
        epoch_seed = tf.random.experimental.stateless_fold_in(run_seed, number)
        ds = examples
        if shuffle_buffer:
            tf.compat.v1.get_default_graph().seed = _GRAPH_SEED  # this function's graph only
            order_seed = tf.random.stateless_uniform(
                (), epoch_seed, minval=None, maxval=None, dtype=tf.int64
            )
            ds = ds.shuffle(shuffle_buffer, seed=order_seed, reshuffle_each_iteration=False)
        # The i-th example of the epoch is augmented with the stateless seed (seed, e, i).
        ds = ds.enumerate().map(
            lambda index, example: preprocess(
                example, tf.random.experimental.stateless_fold_in(epoch_seed, index)
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.batch(batch_size, drop_remainder=drop_remainder)

    return epoch


# Preprocessing.


def _preprocess_fn(name: str, spec: _Dataset, training: bool) -> Callable:
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)

    def preprocess(example, seed):
        image, label = example
        if name == "imagenet2012":
            image = _imagenet_train(image, seed) if training else _imagenet_eval(image)
        elif training:
            image = _pad_crop_flip(image, spec.crop_padding, seed)
        image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
        return tf.ensure_shape(image, spec.input_shape), label

    return preprocess


def _pad_crop_flip(image, padding: int, seed):
    """Zero-pad by `padding`, crop back to the original size at random, flip at random."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.shape(image)
    image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.stateless_random_crop(image, shape, seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _imagenet_train(jpeg, seed):
    """Random-resized crop (area 8-100 %, aspect 3/4-4/3) to 224×224, random flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = tf.image.extract_jpeg_shape(jpeg)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.image.resize(image, (IMAGENET_SIZE, IMAGENET_SIZE))
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _imagenet_eval(jpeg):
    """The central 224/256 of the short side, resized to 224×224: resize 256, crop 224."""
    shape = tf.image.extract_jpeg_shape(jpeg)
    height, width = shape[0], shape[1]
    side = tf.cast(
        tf.round(tf.cast(tf.minimum(height, width), tf.float32) * IMAGENET_SIZE / IMAGENET_RESIZE),
        tf.int32,
    )
    window = tf.stack([(height - side) // 2, (width - side) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
    return tf.image.resize(image, (IMAGENET_SIZE, IMAGENET_SIZE))


# Preparing the data.


def _prepared_builder(name: str, data_dir, fashion_mnist_dir) -> tfds.core.DatasetBuilder:
    """tfds's builder for `name`, prepared in `data_dir` if it was not yet.

    Two processes that find the dataset unprepared (two trainings, or test workers,
    started at once on a fresh machine) take turns: the first prepares it while holding
    `_preparing`'s lock, the second then finds it prepared.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    with _preparing(builder.data_dir_root, name):
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():  # another process prepared it meanwhile
            return builder
        return _prepare(builder, name, data_dir, fashion_mnist_dir)


@contextlib.contextmanager
def _preparing(data_dir_root, name: str) -> Iterator[None]:
    """Hold an exclusive lock on `<data_dir_root>/.<name>.lock` (local folders on POSIX).

    A remote `data_dir` (`gs://...`) or a system without `fcntl` is not locked: tfds's own
    behaviour there.
    """
    root = str(data_dir_root)
    if fcntl is None or "://" in root:
        yield
        return
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _prepare(builder, name: str, data_dir, fashion_mnist_dir) -> tfds.core.DatasetBuilder:
    if name == "fashion_mnist":
        _prepare_fashion_mnist(builder, epath.Path(fashion_mnist_dir))
        return tfds.builder(name, data_dir=data_dir)  # reads the info just written
    if name == "imagenet2012":
        _prepare_imagenet(builder)
        return builder
    try:
        builder.download_and_prepare()
    except Exception as err:  # noqa: BLE001 - any download failure means the same to the user
        raise DataNotFoundError(
            f"{name} is not prepared in {builder.data_dir_root} and tfds could not "
            f"download it ({type(err).__name__}: {err}). Run once on a machine with "
            f'internet access: python -c "import tensorflow_datasets as tfds; '
            f"tfds.builder('{name}', data_dir='{builder.data_dir_root}')"
            f'.download_and_prepare()", then copy {builder.data_dir_root}/{name} here.'
        ) from err
    return builder


def _prepare_imagenet(builder: tfds.core.DatasetBuilder) -> None:
    manual_dir = epath.Path(builder.data_dir_root) / "downloads" / "manual"
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except Exception as err:
        # Whatever tfds tripped over, missing archives are the cause to report.
        if all((manual_dir / f).is_file() for f in IMAGENET_FILES):
            raise
        raise DataNotFoundError(
            f"imagenet2012 is not prepared in {builder.data_dir_root} and its archives are "
            f"not in {manual_dir}. ImageNet is a manual download: register at "
            f"https://image-net.org/download-images, download {' and '.join(IMAGENET_FILES)}, "
            f"put both files in {manual_dir} and run again (tfds then prepares the dataset "
            "once, which takes hours)."
        ) from err


class _LocalFashionMNIST(mnist.FashionMNIST, skip_registration=True):
    """tfds's `fashion_mnist` builder, taking its four files from a local folder.

    The folder is the download manager's manual folder, where tfds looks for a file
    before downloading it. Debian re-compressed the files, so the registered checksums
    are replaced by the local files' own.
    """

    name = "fashion_mnist"

    def __init__(self, *, files_dir: epath.Path, **kwargs):
        self._files_dir = files_dir
        super().__init__(**kwargs)

    @property
    def url_infos(self) -> dict[str, checksums.UrlInfo]:
        return {
            self.URL + filename: checksums.compute_url_info(self._files_dir / filename)
            for filename in FASHION_MNIST_FILES
        }


def _prepare_fashion_mnist(builder: tfds.core.DatasetBuilder, files_dir: epath.Path) -> None:
    missing = [f for f in FASHION_MNIST_FILES if not (files_dir / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"fashion_mnist is not prepared in {builder.data_dir_root} and {files_dir} lacks "
            f"{', '.join(missing)}. Install Debian's package with "
            "`sudo apt-get install dataset-fashion-mnist` (it puts the four IDX .gz files in "
            f"{FASHION_MNIST_DIR}), or pass `fashion_mnist_dir=` a folder holding "
            f"{', '.join(FASHION_MNIST_FILES)} (from "
            "https://github.com/zalandoresearch/fashion-mnist)."
        )
    local = _LocalFashionMNIST(files_dir=files_dir, data_dir=builder.data_dir_root)
    local.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=files_dir, try_download_gcs=False)
    )
