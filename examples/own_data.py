"""Write a public data set in mmsid's own-data format, to try the CLI on your own files.

    python examples/own_data.py --out my_data      # from $MMSID_DATA_DIR/lfm2k-mm
    mmsid data describe my_data/dataset.yaml

It writes ``interactions.csv`` (user, item, timestamp), ``items.csv`` (item, name, tags),
``audio.npy`` (one VGGish vector per item, in items.csv order) and the ``dataset.yaml`` that
names them: the same shape your own export would have.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def convert(out: str | Path, data_dir: str | None = None) -> Path:
    from mmsid.data import load_dataset

    ds = load_dataset("lfm2k-mm", data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw_item = ds.items["item_raw"].to_numpy()
    raw_user = ds.users["user_raw"].to_numpy()
    inter = ds.interactions
    pd.DataFrame(
        {
            "user": raw_user[inter["user"].to_numpy()],
            "item": raw_item[inter["item"].to_numpy()],
            "timestamp": inter["timestamp"].to_numpy(),
        }
    ).to_csv(out / "interactions.csv", index=False)
    tags = ds.modalities["text"].raw
    pd.DataFrame({"item": raw_item, "name": ds.items["title"], "tags": tags}).to_csv(
        out / "items.csv", index=False
    )
    np.save(out / "audio.npy", np.asarray(ds.modalities["audio_vggish"].raw, dtype=np.float32))
    (out / "dataset.yaml").write_text(
        "name: lfm2k-own\n"
        "interactions: interactions.csv\n"
        "items: items.csv\n"
        "text_column: tags\n"
        "embeddings:\n"
        "  audio: audio.npy\n"
    )
    return out / "dataset.yaml"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=None, help="Default: $MMSID_DATA_DIR.")
    args = ap.parse_args()
    print(f"wrote {convert(args.out, args.data_dir)}")
