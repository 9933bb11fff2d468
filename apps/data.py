"""Input pipelines through tensorflow-datasets: Fashion-MNIST, CIFAR-10 and ImageNet.

One entry point, [`load`][apps.data.load], gives a batched `tf.data.Dataset` of
`(image, label)`: a float32 image normalized by the dataset's per-channel mean and
standard deviation, and an int64 label. Training splits are augmented as in the LNS
paper (§4.1): CIFAR-10 is padded by 4 pixels, randomly cropped back to 32×32 and flipped
horizontally (He et al., 2016); Fashion-MNIST likewise with a padding of 2; ImageNet gets
a random-resized crop to 224×224 and a flip (PyTorch's ImageNet example), and is
evaluated on the central 224×224 crop of the image resized to 256 on its short side.

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

import dataclasses
import os
from collections.abc import Callable

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
    limit: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched `tf.data.Dataset` of `(normalized float32 image, int label)`.

    Prepares the dataset with tfds on first use (see the module docstring).

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
        shuffle: Whether to shuffle files and examples; default: `training`.
        seed: Seed of the shuffling and the augmentation; `None` for a random one. With a
            seed the pipeline gives the same batches on every run (each epoch still
            draws a new order and new augmentations).
        limit: Use only `limit` examples of the split, the first ones read (fixed unless
            `shuffle` shuffles the order of a split stored in several files).
        drop_remainder: Whether to drop a last, smaller batch; default: `training`.

    Returns:
        A dataset of `(images, labels)` with images of shape
        `(batch, *info(name)[0])`, float32, and int64 labels in `[0, num_classes)`.

    Raises:
        ValueError: For an unknown `name`, a bad `batch_size` or `limit`.
        DataNotFoundError: If the dataset is not prepared and cannot be (no Fashion-MNIST
            files, no network for CIFAR-10, no ImageNet archives); the message says how
            to get it.

    Example:
        ```python
        train = load("fashion_mnist", "train", batch_size=128, seed=0)
        ```
    """
    spec = _spec(name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got batch_size={batch_size!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None, got limit={limit!r}.")
    training = split.startswith("train") if training is None else training
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder

    builder = _prepared_builder(name, data_dir, fashion_mnist_dir)
    ds = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
        # ImageNet: decode only the crop (tf.image.decode_and_crop_jpeg).
        decoders={"image": tfds.decode.SkipDecoding()} if name == "imagenet2012" else None,
    )
    if limit is not None:
        ds = ds.take(limit)
    if spec.cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(spec.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    # One stateless seed per example makes the augmentation reproducible given `seed`.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(_preprocess_fn(name, spec, training), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


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
    """tfds's builder for `name`, prepared in `data_dir` if it was not yet."""
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
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
