"""Train on ImageNet (`imagenet2012`): `apps/train.py` with `--dataset` fixed.

    python apps/train_imagenet.py --flagfile=apps/configs/imagenet_resnet18_baseline.flags
    python apps/train_imagenet.py --flagfile=apps/configs/imagenet_resnet18_lns.flags

Every other flag is `apps/train.py`'s (`--help` lists them); ImageNet is a manual
download, see `apps/data.py`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apps import logs  # noqa: E402  (imports no TensorFlow)

if __name__ == "__main__":
    logs.quiet_tensorflow(sys.argv)  # before TensorFlow is imported

from absl import flags  # noqa: E402

from apps import train  # noqa: E402

DATASET = "imagenet2012"

flags.adopt_module_key_flags(train)  # --help lists apps/train.py's flags

if __name__ == "__main__":
    train.run_script(DATASET)
