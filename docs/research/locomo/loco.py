"""Leave-one-conversation-out selection of the fusion parameters, and the report's table.

For each held-out conversation, every parameter is chosen by coordinate ascent on the other six
(objective: recall@10 averaged over their questions, + 0.01 x nDCG@10 to break near-ties); the
held-out conversation is then scored with those parameters. Held-out figures are averaged over
all questions (each question is held out exactly once). Finally the parameters are chosen once
more on all seven ("final parameters") and scored on all seven.

usage: python3 loco.py [--tune-topn N]   (candidates per retriever while tuning; default: all)
"""
import sys, json, itertools
import numpy as np
from common import *
from fusion import *

GRID = {
    "bvar": [f"{sl}|{st}|{tv}" for sl in ["lucene", "nltk"] for st in ["nostem", "stem"] for tv in ["raw", "cap", "spk_cap"]],
    "vvar": ["raw", "cap", "spk_cap", "date_spk_cap"],
    "norm": ["max_minmax", "minmax", "max", "rrf"],
    "w": [round(x, 2) for x in np.arange(0, 1.0001, 0.05)],
    "a": [0, .05, .1, .15, .2, .25, .3, .4, .5, .6, .8, 1.0],
    "nmode": ["max", "mean"],
    "s": [0, .05, .1, .15, .2, .25, .3, .4, .5, .7, 1.0, 1.5, 2.0],
    "sp": [0, .02, .05, .1, .15, .2, .3, .4, .5, .7, 1.0],
}
START = {"bvar": "nltk|nostem|raw", "vvar": "raw", "norm": "max_minmax", "w": 0.5, "a": 0, "nmode": "max", "s": 0, "sp": 0}

def load_all():
    C = load_corpus()
    bm = dict(np.load(f"{DATA}/bm25.npz"))
    emb = {}
    for c in CONVS:
        notes, qs = C[c]["notes"], C[c]["qs"]
        qv = load_vecs(f"{c}_q", len(qs))
        for v in GRID["vvar"]:
            emb[f"{c}_{v}"] = qv @ load_vecs(f"{c}_{v}", len(notes)).T
    return {c: Conv(c, C, bm, emb) for c in CONVS}

def pooled(convs, scorer):
    r5, r10, nd = [], [], []
    for cv in convs:
        a, b, c = evaluate(cv, scorer(cv))
        r5.append(a); r10.append(b); nd.append(c)
    return tuple(float(np.concatenate(x).mean()) for x in (r5, r10, nd))

def objective(convs, p, topn):
    _, r10, nd = pooled(convs, lambda cv: fuse(cv, p, topn))
    return r10 + 0.01 * nd

def tune(convs, topn=None, passes=4, fixed=None, grid=None):
    grid = grid or GRID
    p = dict(START); p.update(fixed or {})
    best = objective(convs, p, topn)
    for _ in range(passes):
        changed = False
        for k, vals in grid.items():
            if fixed and k in fixed:
                continue
            for v in vals:
                if v == p[k]:
                    continue
                q = dict(p); q[k] = v
                o = objective(convs, q, topn)
                if o > best + 1e-9:
                    best, p, changed = o, q, True
        if not changed:
            break
    return p, best

def fmt(m):
    return " | ".join(f"{x:.3f}" for x in m)

if __name__ == "__main__":
    tune_topn = None
    if "--tune-topn" in sys.argv:
        tune_topn = int(sys.argv[sys.argv.index("--tune-topn") + 1])
    convs = load_all()
    allc = [convs[c] for c in CONVS]
    rows = []
    base_b, base_v = "nltk|nostem|raw", "raw"
    for topn in [None, 100, 50]:
        tn = "all" if topn is None else str(topn)
        rows.append((f"BM25 alone (text, NLTK stop-words, no stemming) [N={tn}]",
                     pooled(allc, lambda cv: np.where(topn_mask(cv.B[base_b], topn) & (cv.B[base_b] > 0), cv.B[base_b], -np.inf))))
        rows.append((f"vectors alone (MiniLM, text) [N={tn}]", pooled(allc, lambda cv: np.where(topn_mask(cv.V[base_v], topn), cv.V[base_v], -np.inf))))
        rows.append((f"plain RRF k=60 of the two [N={tn}]", pooled(allc, lambda cv: rrf(cv, base_b, base_v, 60, topn))))
        bb, bv = "nltk|stem|spk_cap", "spk_cap"
        rows.append((f"BM25 alone, note = author + text + caption, stemmed [N={tn}]",
                     pooled(allc, lambda cv: np.where(topn_mask(cv.B[bb], topn) & (cv.B[bb] > 0), cv.B[bb], -np.inf))))
        rows.append((f"vectors alone, note = 'author: text [image: caption]' [N={tn}]", pooled(allc, lambda cv: np.where(topn_mask(cv.V[bv], topn), cv.V[bv], -np.inf))))
        rows.append((f"plain RRF k=60 of those two [N={tn}]", pooled(allc, lambda cv: rrf(cv, bb, bv, 60, topn))))
    # Held-out: per fold, tune on six, score the seventh.
    folds = {}
    for held in CONVS:
        train = [convs[c] for c in CONVS if c != held]
        p, o = tune(train, tune_topn)
        folds[held] = p
        print("fold", held, "train obj %.4f" % o, json.dumps(p), flush=True)
    for topn in [None, 100, 50]:
        tn = "all" if topn is None else str(topn)
        r5, r10, nd = [], [], []
        per = []
        for held in CONVS:
            a, b, c = evaluate(convs[held], fuse(convs[held], folds[held], topn))
            r5.append(a); r10.append(b); nd.append(c)
            per.append((held, float(b.mean())))
        rows.append((f"fused, held-out (LOCO) [N={tn}]", tuple(float(np.concatenate(x).mean()) for x in (r5, r10, nd))))
        print("held-out r@10 per conversation", tn, per)
    pf, o = tune(allc, tune_topn)
    print("final params (tuned on all seven):", json.dumps(pf))
    for topn in [None, 100, 50]:
        tn = "all" if topn is None else str(topn)
        rows.append((f"fused, final params on all seven [N={tn}]", pooled(allc, lambda cv: fuse(cv, pf, topn))))
        rows.append((f"fused, final params, strict cosine (only vector hits have a cosine) [N={tn}]",
                     pooled(allc, lambda cv: fuse(cv, pf, topn, strict_cosine=True))))
        rows.append((f"fused, final params, no neighbour fetch [N={tn}]",
                     pooled(allc, lambda cv: fuse(cv, pf, topn, fetch_neighbours=False))))
    print("\n| method | recall@5 | recall@10 | nDCG@10 |\n|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {fmt(m)} |")
    json.dump({"folds": folds, "final": pf, "rows": rows}, open(f"/tmp/kbrank/results{'' if tune_topn is None else '_tune' + str(tune_topn)}.json", "w"), indent=1)
