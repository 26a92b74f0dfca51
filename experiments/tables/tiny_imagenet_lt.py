"""Tiny-ImageNet-LT, imbalance 100, every method's 200-epoch from-scratch recipe and FFDS's pretrained row, 3 seeds:
the table for a GPU.

    ltjax-table experiments/tables/tiny_imagenet_lt.py --out experiments/tables/results/tiny_imagenet_lt

Each row trains with its method's own recipe file (`experiments/configs/<method>.py:tiny_imagenet-if100`: a
small-input ResNet-18 on 64-px images, SGD momentum 0.9, batch 128 (KPS 64), lr 0.1 with 5 warm-up epochs, 200
epochs, each method's switch epochs and decay), on the official `tiny-imagenet-200` folder
(`--config.dataset.data_dir` in the recipes' default is empty: set `dataset.data_dir` below or pass the folder).
Rows that share a head and a schedule train as one ensemble.

The from-scratch rows are not the papers' setting; FFDS fine-tunes an ImageNet-pretrained ResNet-18 at 224 px, which
is the last row (`experiments/configs/ffds.py:tiny_imagenet-if100-pretrained`, 100 epochs, torchvision's
`ResNet18_Weights.IMAGENET1K_V1` converted from `PRETRAINED` below: download it first), beside its paper's 43.86. The
other papers report no Tiny-ImageNet-LT numbers.

Expected runtime: not measured (no GPU was lent to the session that wrote this table). Estimated from the model's
cost: the small-input ResNet-18 does about 2.3 GFLOPs per 64-px image forward, about 7 GFLOPs per training image;
11 rows x 3 seeds x 200 epochs x 21,549 images is 1.4e8 training images, about 1e18 FLOPs, so roughly 2.5 hours on
one H100 at a sustained 120 TFLOP/s in bfloat16 (`model.dtype`), twice that in float32; the pretrained row (1.8
GFLOPs per 224-px forward, 100 epochs) adds about 3.5e16 FLOPs, minutes by the same estimate, if the device crops
keep up. On the 2-core CPU that runs the tests (about 6 images/s for this model) it would take years: run
`tiny_imagenet_lt_reduced.py` there instead.
"""
import pathlib

from ltjax.tables import Row, Table

DATA = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "tiny-imagenet-200"
PRETRAINED = DATA.parent / "resnet18-f37072fd.pth"  # torchvision's ImageNet ResNet-18, as it publishes it
SEEDS = (0, 1, 2)


def _recipe(method: str) -> str:
    return f"experiments/configs/{method}.py:tiny_imagenet-if100"


def get_table() -> Table:
    rows = (
        Row("CE", {}, recipe=_recipe("ce")),
        Row("Focal", {}, recipe=_recipe("focal")),
        Row("CB-Focal", {}, recipe=_recipe("cb_focal")),
        Row("LDAM-DRW", {}, recipe=_recipe("ldam_drw")),
        Row("IB", {}, recipe=_recipe("ib")),
        Row("D-FFDS", {}, recipe=_recipe("ffds")),
        Row("KPS", {}, recipe=_recipe("kps")),
        Row("IIF", {}, recipe=_recipe("iif")),
        Row("LA", {}, recipe=_recipe("logit_adjustment")),
        Row("BS", {}, recipe=_recipe("balanced_softmax")),
        Row("SWRM", {}, recipe=_recipe("swrm")),
        Row("D-FFDS, pretrained, 224 px", {}, recipe=f"{_recipe('ffds')}-pretrained",
            overrides={"model.pretrained": str(PRETRAINED)}, paper={"top1_accuracy": 43.86},
            source="FFDS Table 1a (pretrained ResNet-18, 224 px)"),
    )
    return Table(
        name="tiny_imagenet_lt",
        title="Tiny-ImageNet-LT, imbalance 100, ResNet-18 from scratch, 200 epochs",
        recipe=_recipe("ce"),
        overrides={"dataset.data_dir": str(DATA), "progress_bar": False},
        rows=rows,
        seeds=SEEDS,
        notes=__doc__.split("\n\n")[3],
    )
