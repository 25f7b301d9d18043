"""Test helper: a tiny NIH ChestX-ray14-format folder (PNGs, ``Data_Entry_2017.csv``, and split
CSVs in the Source Matters authors' layout ``train_foldK.csv``/``val_foldK.csv``/``test.csv``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_nih_folder(root: Path, *, n_patients: int = 24, per_patient: int = 2, size: int = 48,
                     folds: int = 2, seed: int = 0) -> dict[str, Path]:
    """Write images/, Data_Entry_2017.csv and csv/ under ``root``; positives ("YES") get a bright
    disc so a tiny model can learn them. Returns the paths and the row table."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, csv_dir = root / "images", root / "csv"
    images.mkdir(parents=True)
    csv_dir.mkdir()
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for p in range(n_patients):
        label = p % 2
        for j in range(per_patient):
            arr = 0.35 + 0.1 * rng.random((size, size))
            if label:
                arr += 0.4 * (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 5) ** 2)
            name = f"{p + 1:08d}_{j:03d}.png"
            Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(images / name)
            rows.append({"Image Index": name, "Finding Labels": "Atelectasis" if label else "No Finding",
                         "Follow-up #": j, "Patient ID": p + 1, "Patient Age": 30 + p,
                         "Patient Gender": "MF"[p % 4 // 2], "View Position": "PA",
                         "OriginalImage[Width": 1024, "Height]": 1024})
    entry = pd.DataFrame(rows)
    entry.to_csv(root / "Data_Entry_2017.csv", index=False)
    table = pd.DataFrame({"path": entry["Image Index"], "pid": entry["Patient ID"],
                          "class": np.where(entry["Finding Labels"] == "No Finding", "NO", "YES")})
    pids = np.array(sorted(table.pid.unique()))
    test_p = set(pids[rng.permutation(len(pids))[: len(pids) // 4]])
    test = table[table.pid.isin(test_p)].reset_index(drop=True)
    test.to_csv(csv_dir / "test.csv")  # the authors' files carry the unnamed index column
    rest = table[~table.pid.isin(test_p)].reset_index(drop=True)
    rest_p = np.array(sorted(rest.pid.unique()))
    for k in range(1, folds + 1):
        val_p = set(rest_p[rng.permutation(len(rest_p))[: max(1, round(0.15 * len(rest_p)))]])
        rest[~rest.pid.isin(val_p)].reset_index(drop=True).to_csv(csv_dir / f"train_fold{k}.csv")
        rest[rest.pid.isin(val_p)].reset_index(drop=True).to_csv(csv_dir / f"val_fold{k}.csv")
    return {"images": images, "csv": csv_dir, "entry": root / "Data_Entry_2017.csv"}


def write_sex_folders(csv_dir: Path, entry: Path, *, ps: tuple[int, ...] = (0, 50, 100), folds: int = 2,
                      seed: int = 0) -> Path:
    """Write ``csv_dir/gender/`` in the authors' sex layout (``gender.py``): ``test.csv`` = half of
    the male positives (by patient) + the female negatives; ``F_<100p>/train_foldK.csv`` and
    ``val_foldK.csv`` from female positives (fraction p), the other male positives (1 - p) and the
    male negatives. Columns ``,path,class,pid,Patient Gender``; classes Atelectasis / No Finding."""
    rng = np.random.default_rng(seed)
    e = pd.read_csv(entry)
    t = pd.DataFrame({"path": e["Image Index"], "class": e["Finding Labels"], "pid": e["Patient ID"],
                      "Patient Gender": e["Patient Gender"]})
    pos_m = t[(t["class"] != "No Finding") & (t["Patient Gender"] == "M")]
    pos_f = t[(t["class"] != "No Finding") & (t["Patient Gender"] == "F")]
    neg_m = t[(t["class"] == "No Finding") & (t["Patient Gender"] == "M")]
    neg_f = t[(t["class"] == "No Finding") & (t["Patient Gender"] == "F")]
    m_pids = np.array(sorted(pos_m.pid.unique()))
    test_pids = set(m_pids[rng.permutation(len(m_pids))[: len(m_pids) // 2]])
    out = csv_dir / "gender"
    out.mkdir()
    pd.concat([pos_m[pos_m.pid.isin(test_pids)], neg_f], ignore_index=True).to_csv(out / "test.csv")
    pos_m_train = pos_m[~pos_m.pid.isin(test_pids)]
    for pct in ps:
        p = pct / 100
        train = pd.concat([pos_f.sample(frac=p, random_state=seed), pos_m_train.sample(frac=1 - p, random_state=seed),
                           neg_m], ignore_index=True)
        (out / f"F_{pct}").mkdir()
        pids = np.array(sorted(train.pid.unique()))
        for k in range(1, folds + 1):
            val_p = set(pids[rng.permutation(len(pids))[: max(1, round(0.15 * len(pids)))]])
            train[~train.pid.isin(val_p)].reset_index(drop=True).to_csv(out / f"F_{pct}" / f"train_fold{k}.csv")
            train[train.pid.isin(val_p)].reset_index(drop=True).to_csv(out / f"F_{pct}" / f"val_fold{k}.csv")
    return out
