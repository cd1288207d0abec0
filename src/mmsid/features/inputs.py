"""The tokenizer input: the chosen modalities' embeddings, each optionally centred on its mean
over the fitted items and re-normalised, concatenated. One rule for the tokenize stage, new
items (mmsid.assign), the service and the content baselines."""

from __future__ import annotations

import numpy as np

from mmsid.features import ItemFeatures, l2_normalize

# Baseline input per data set: the concatenation of these L2-normalised modalities.
# lfm2k-mm: the shipped MiniLM tag features stand for text (same encoder as ours).
DEFAULT_MODALITIES = {
    "ml100k-mm": ["text", "image"],
    "lfm2k-mm": ["text_minilm", "audio_vggish", "audio_whisper"],
    "amazon-beauty": ["text"],
}


def center_means(
    feats: ItemFeatures, names: list[str], fit_items: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """(d,) mean of each named modality over the items that have it (among ``fit_items`` when
    given): the centering of the tokenizer input, saved with the run for new items."""
    in_fit = np.ones(feats.n_items, dtype=bool)
    if fit_items is not None:
        in_fit = np.zeros(feats.n_items, dtype=bool)
        in_fit[fit_items] = True
    return {
        n: feats.embeddings[n][feats.masks[n] & in_fit].mean(0)
        for n in names
        if feats.masks[n].any()
    }


def concat_features(
    feats: ItemFeatures,
    names: list[str],
    *,
    center: bool = False,
    fit_items: np.ndarray | None = None,
    means: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, sum d) concatenation of the named modalities (absent rows are zero) and the mask of
    items that have at least one of them. ``center``: each modality minus its mean over the
    items that have it (among ``fit_items`` when given: the mean is fitted, so cold items must
    not enter it), re-normalised (absent rows stay zero). ``means``: centre with these fitted
    means instead (new items: mmsid.assign)."""
    if means is None:
        means = center_means(feats, names, fit_items) if center else {}
    blocks = []
    for n in names:
        e, m = feats.embeddings[n], feats.masks[n]
        if n in means:
            e = e.copy()
            e[m] = l2_normalize(e[m] - means[n][None])
        blocks.append(e)
    x = np.concatenate(blocks, axis=1)
    mask = np.logical_or.reduce([feats.masks[n] for n in names])
    return x, mask
