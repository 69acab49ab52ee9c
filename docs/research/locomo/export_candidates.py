"""Exports, per query, the candidate lists production would hand to rank.rs (top-N BM25 hits,
top-N vector hits, plus the +-1 neighbours of every hit; cosine for every candidate, BM25 only
for the lexical hits), with the relevant ids, so that rank.rs can be evaluated on exactly the
same input (ranktest/examples/eval.rs) — the seed of a Rust test in the repo.

usage: python3 export_candidates.py [N]   (N per retriever; default 50) -> data/candidates_N.json
"""
import sys, json
import numpy as np
from loco import *

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
final = json.load(open("/tmp/kbrank/results.json"))["final"]
assert final["norm"] in ("max", "minmax"), "rank.rs implements the max and min-max normalisations"
C = load_corpus()
convs = load_all()
out = {"params": {"lexical_weight": final["w"], "normalisation": "max" if final["norm"] == "max" else "min_max",
                  "neighbour_weight": final["a"], "neighbour_mode": final["nmode"],
                  "thread_weight": final["s"], "author_boost": final["sp"]},
       "queries": []}
for c in CONVS:
    cv = convs[c]
    notes, qs = C[c]["notes"], C[c]["qs"]
    B, V = cv.B[final["bvar"]], cv.V[final["vvar"]]
    candB = topn_mask(B, N) & (B > 0)
    cand = neighbours_of(candB | topn_mask(V, N), cv)
    for q in range(cv.Q):
        if not cv.valid[q]:
            continue
        cands = []
        for i in np.nonzero(cand[q])[0]:
            n = notes[i]
            cands.append({"id": f"{c}/{n['id']}", "bm25": float(B[q, i]) if candB[q, i] else None,
                          "cosine": float(V[q, i]), "thread": f"{c}/{n['thread']}", "position": n["position"],
                          "created_at_ms": n["created_at"], "author": n["author"]})
        out["queries"].append({"query": qs[q]["question"], "relevant": [f"{c}/{e}" for e in qs[q]["evidence"]],
                               "candidates": cands})
json.dump(out, open(f"{DATA}/candidates_{N}.json", "w"))
print(len(out["queries"]), "queries,", np.mean([len(x["candidates"]) for x in out["queries"]]), "candidates each")
