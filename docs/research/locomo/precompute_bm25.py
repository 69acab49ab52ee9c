"""BM25 score matrices [questions x notes] for every conversation and BM25 text variant.

Variants: stop-word list {lucene (tantivy's built-in English list), nltk} x stemming {no, yes}
x note text {raw: text, cap: text + caption, spk_cap: author + text + caption}.
Queries are the raw question; the same tokeniser applies to both sides.
"""
import numpy as np
from common import *

C = load_corpus()
NL = {w for w in NLTK_STOP if "'" not in w}  # apostrophes never survive the tokeniser anyway
out = {}
for c in CONVS:
    notes, qs = C[c]["notes"], C[c]["qs"]
    texts = {
        "raw": [n["text"] for n in notes],
        "cap": [n["text"] + " " + n["caption"] for n in notes],
        "spk_cap": [n["author"] + " " + n["text"] + " " + n["caption"] for n in notes],
    }
    for sl_name, sl in [("lucene", STOP), ("nltk", NL)]:
        for stem in [False, True]:
            for tv, tx in texts.items():
                out[f"{c}|{sl_name}|{'stem' if stem else 'nostem'}|{tv}"] = bm25_matrix(
                    tx, [q["question"] for q in qs], stem=stem, stoplist=sl)
    print(c, flush=True)
np.savez_compressed(f"{DATA}/bm25.npz", **out)
