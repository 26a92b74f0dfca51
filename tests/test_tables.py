"""Tables: a spec's cells grouped into ensembles, trained once, summarised as mean ± std with gains over CE."""
import json

import numpy as np

from ltjax.tables import Row, Table
from ltjax.tables import main as table_main
from ltjax.tables.render import summarize
from ltjax.tables.run import plan_groups

SPEC = '''
from ltjax.tables import Row, Table


def get_table():
    return Table(
        name="tiny", title="Tiny test table", recipe="ltjax/configs/digits.py",
        overrides={"num_epochs": 2, "progress_bar": False, "model.name": "resnet2", "plots": False},
        rows=(Row("CE", {"name": "ce"}), Row("LA", {"name": "la", "tau": 0.5}, paper={"top1_accuracy": 43.89},
                                               source="Menon et al."),
              Row("CE + cRT", {"name": "crt"}, overrides={"dataset.sampler": "class_balanced"}, after="CE")),
        seeds=(0, 1),
    )
'''


def test_a_table_trains_its_groups_summarises_them_and_is_not_trained_again(tmp_path, capsys):
    spec = tmp_path / "tiny.py"
    spec.write_text(SPEC)
    arguments = [str(spec), "--root", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert table_main.main(arguments) == 0
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    # CE and LA share one ensemble; cRT trains after CE, from its cells.
    assert table["groups"] == 2
    rows = {row["label"]: row for row in table["rows"]}
    for label, row in rows.items():
        top1 = [cell["metrics"]["top1_accuracy"] for cell in row["cells"]]
        assert len(top1) == 2 and row["metrics"]["top1_accuracy"]["mean"] == np.mean(top1)
        np.testing.assert_allclose(row["metrics"]["top1_accuracy"]["std"], np.std(top1, ddof=1))
        for cell in row["cells"]:  # every cell keeps its workdir with the member's own config
            config = json.loads((tmp_path / cell["workdir"] / "config.json").read_text())
            assert config["seed"] == cell["seed"] and config["loss"]["name"] == {
                "CE": "ce", "LA": "la", "CE + cRT": "crt"}[label]
    crt_cells = {cell["seed"]: cell for cell in rows["CE + cRT"]["cells"]}
    for cell in rows["CE"]["cells"]:  # each cRT cell starts from the CE cell of its seed
        crt_config = json.loads((tmp_path / crt_cells[cell["seed"]]["workdir"] / "config.json").read_text())
        assert crt_config["loss"]["init_from"] == cell["workdir"]
    assert rows["CE"]["gain"]["top1_accuracy"] == 0.0
    assert rows["LA"]["gain"]["top1_accuracy"] == rows["LA"]["metrics"]["top1_accuracy"]["mean"] - rows["CE"][
        "metrics"]["top1_accuracy"]["mean"]
    for cell in rows["LA"]["cells"]:  # the papers' protocol, from the cell's log: its best test top-1 over epochs
        log = [json.loads(line) for line in (tmp_path / cell["workdir"] / "log.jsonl").read_text().splitlines()]
        assert cell["protocols"]["best_epoch_top1_accuracy"] == 100 * max(line["test"]["top1_accuracy"] for line in log)
    markdown = (tmp_path / "out" / "table.md").read_text()
    assert "| LA | " in markdown and "43.89" in markdown and "Menon et al." in markdown
    assert "| Best epoch (optimistic) | Val-selected | Paper top-1 |" in markdown
    assert (tmp_path / "out" / "table.png").stat().st_size > 0
    capsys.readouterr()
    assert table_main.main(arguments) == 0  # resumes: every group is finished
    assert capsys.readouterr().out.count("is finished") == 2
    resumed = json.loads((tmp_path / "out" / "table.json").read_text())
    assert resumed["training_seconds"] == 0.0  # nothing trained again; the groups' logged time still counts
    assert resumed["total_training_seconds"] == table["total_training_seconds"] > 0


def test_cells_group_by_what_their_programs_share(tmp_path):
    table = Table(name="t", title="t", recipe="ltjax/configs/digits.py", seeds=(0, 1), rows=(
        Row("CE", {"name": "ce"}), Row("LA", {"name": "la"}), Row("LDAM-DRW", {"name": "ldam_drw"}),
        Row("KPS", {"name": "kps"}), Row("IB", {"name": "ib"}, overrides={"optimizer.lr_decay": ((0.5, 0.01),)}),
        Row("CE + cRT", {"name": "crt"}, overrides={"dataset.sampler": "class_balanced"}, after="CE")))
    groups = plan_groups(table, tmp_path, max_members=64)
    # The linear head (CE, LA), the normed head (LDAM-DRW, KPS), IB's own schedule, and cRT after CE's cells.
    assert [sorted({cell.row.label for cell in group.cells}) for group in groups] == [
        ["CE", "LA"], ["KPS", "LDAM-DRW"], ["IB"], ["CE + cRT"]]
    assert [group.workdir.name.split("-")[0] for group in groups] == ["linear", "normed", "linear", "linear"]
    ce_dirs = {cell.seed: str(groups[0].member_dir(member)) for member, cell in enumerate(groups[0].cells)
               if cell.row.label == "CE"}
    assert {cell.seed: cell.config.loss.init_from for cell in groups[3].cells} == ce_dirs


def test_groups_respect_the_largest_ensemble(tmp_path):
    table = Table(name="t", title="t", recipe="ltjax/configs/digits.py", rows=(Row("CE", {"name": "ce"}),),
                  seeds=tuple(range(5)))
    assert [len(group.cells) for group in plan_groups(table, tmp_path, max_members=2)] == [2, 2, 1]


def test_diverged_cells_are_counted_and_left_out_of_the_statistics():
    table = Table(name="t", title="t", recipe="ltjax/configs/digits.py", rows=(Row("CE", {"name": "ce"}),),
                  seeds=(0, 1, 2))
    cells = [{"row": "CE", "seed": 0, "workdir": "a", "metrics": {k: 50.0 for k in
                                                                   ("top1_accuracy", "many_shot_accuracy",
                                                                    "medium_shot_accuracy", "few_shot_accuracy")}},
             {"row": "CE", "seed": 1, "workdir": "b", "metrics": {k: 60.0 for k in
                                                                   ("top1_accuracy", "many_shot_accuracy",
                                                                    "medium_shot_accuracy", "few_shot_accuracy")}},
             {"row": "CE", "seed": 2, "workdir": "c", "diverged": {"global_step": 3}}]
    row = summarize(table, {"cells": cells, "seconds": 0.0, "total_seconds": 0.0, "groups": 1})["rows"][0]
    assert row["diverged"] == 1 and row["metrics"]["top1_accuracy"]["mean"] == 55.0
    np.testing.assert_allclose(row["metrics"]["top1_accuracy"]["std"], np.std([50.0, 60.0], ddof=1))
