"""Ablations, each evaluated leave-one-conversation-out like the main method: one component is
fixed (switched off or forced), every other parameter is re-chosen on the six training
conversations by the same coordinate ascent. Prints held-out recall@5 / recall@10 / nDCG@10."""
import numpy as np
from loco import *

ABLATIONS = {
    "no neighbour smoothing (a=0)": {"a": 0},
    "no thread pooling (s=0)": {"s": 0},
    "no author cue (sp=0)": {"sp": 0},
    "plain weighted score fusion only (a=s=sp=0)": {"a": 0, "s": 0, "sp": 0},
    "rank-based (RRF-style) normalisation instead of scores": {"norm": "rrf"},
    "BM25 on bare text, no stemming (vectors: any form)": {"bvar": "nltk|nostem|raw"},
    "BM25 with tantivy's built-in 33-word stop list": {"bvar": "lucene|stem|spk_cap"},
    "vectors of bare text": {"vvar": "raw"},
}
if __name__ == "__main__":
    import sys
    convs = load_all()
    names = list(ABLATIONS)
    if len(sys.argv) > 1:
        names = names[int(sys.argv[1])::2]
    print("| ablation (LOCO held-out, N=all) | recall@5 | recall@10 | nDCG@10 |\n|---|---|---|---|")
    for name in names:
        fixed = ABLATIONS[name]
        r5, r10, nd = [], [], []
        for held in CONVS:
            p, _ = tune([convs[c] for c in CONVS if c != held], None, fixed=fixed)
            a, b, c = evaluate(convs[held], fuse(convs[held], p, None))
            r5.append(a); r10.append(b); nd.append(c)
        m = [float(np.concatenate(x).mean()) for x in (r5, r10, nd)]
        print(f"| {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} |", flush=True)
