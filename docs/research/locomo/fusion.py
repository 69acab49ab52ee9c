"""The fused ranking, vectorised over one conversation (Python mirror of rank.rs), and evaluation.

Per query, over a candidate set:
  nb = normalised BM25, nc = normalised cosine             (per-query normalisation over candidates)
  f  = w * nb + (1 - w) * nc                               (weighted score fusion)
  g  = f + a * neighbour(f)                                (same thread, position +-1)
  h  = g + s * max_{candidates j in same thread} f_j       (thread/session pooling)
  h += sp if the query names the note's author             (author cue)
"""
import math
import numpy as np
from common import *

class Conv:
    def __init__(self, c, C, bm, emb):
        notes, qs = C[c]["notes"], C[c]["qs"]
        self.name = c
        self.N, self.Q = len(notes), len(qs)
        idx = {n["id"]: i for i, n in enumerate(notes)}
        self.rel = [[idx[e] for e in q["evidence"]] for q in qs]
        self.R = np.zeros((self.Q, self.N), dtype=bool)
        for q, r in enumerate(self.rel):
            self.R[q, r] = True
        self.nrel = self.R.sum(1)
        self.valid = self.nrel > 0
        thread = np.array([n["thread"] for n in notes])
        pos = np.array([n["position"] for n in notes])
        self.thread = thread
        # Notes are stored thread by thread in position order, so neighbours are i-1 / i+1 when
        # they share the thread.
        self.prev = np.array([i - 1 if i > 0 and thread[i - 1] == thread[i] and pos[i - 1] == pos[i] - 1 else -1 for i in range(self.N)])
        self.next = np.array([i + 1 if i + 1 < self.N and thread[i + 1] == thread[i] and pos[i + 1] == pos[i] + 1 else -1 for i in range(self.N)])
        # Thread segments (contiguous) for per-thread max.
        self.seg_start = np.r_[0, np.nonzero(np.diff(thread))[0] + 1]
        self.seg_id = np.cumsum(np.r_[0, (np.diff(thread) != 0).astype(int)])
        self.B = {k.split("|", 1)[1]: v for k, v in bm.items() if k.startswith(c + "|")}
        self.V = {k.split("_", 1)[1]: v for k, v in emb.items() if k.startswith(c + "_")}
        # Author cue: the query contains a token of the note author's name.
        authors = sorted({n["author"] for n in notes})
        qtok = [set(tokens(q["question"], stop=False)) for q in qs]
        amen = {a: np.array([any(t in qt for t in tokens(a, stop=False)) for qt in qtok]) for a in authors}
        self.M = np.stack([amen[n["author"]] for n in notes], axis=1).astype(float)

def topn_mask(S, n):
    if n is None or n >= S.shape[1]:
        return np.ones_like(S, dtype=bool)
    part = np.argpartition(-S, n - 1, axis=1)[:, :n]
    m = np.zeros_like(S, dtype=bool)
    np.put_along_axis(m, part, True, axis=1)
    return m

def neighbours_of(mask, conv):
    out = mask.copy()
    hp, hn = conv.prev >= 0, conv.next >= 0
    out[:, hp] |= mask[:, conv.prev[hp]]
    out[:, hn] |= mask[:, conv.next[hn]]
    return out

def masked_minmax(X, cand):
    lo = np.where(cand, X, np.inf).min(1, keepdims=True)
    hi = np.where(cand, X, -np.inf).max(1, keepdims=True)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return np.where(cand, (X - lo) / span, 0.0)

def masked_max(X, cand):
    hi = np.where(cand, X, -np.inf).max(1, keepdims=True)
    hi = np.where(hi > 1e-12, hi, 1.0)
    return np.where(cand, X / hi, 0.0)

def ranks(X, cand):
    # 1-based rank among candidates (non-candidates get a huge rank)
    Y = np.where(cand, X, -np.inf)
    order = np.argsort(-Y, axis=1, kind="stable")
    r = np.empty_like(order)
    np.put_along_axis(r, order, np.arange(1, X.shape[1] + 1)[None, :].repeat(X.shape[0], 0), axis=1)
    return r

def fuse(conv, p, topn=None, fetch_neighbours=True, strict_cosine=False):
    B = conv.B[p["bvar"]]
    V = conv.V[p["vvar"]]
    if topn is None:
        cand = np.ones_like(B, dtype=bool)
        candB = B > 0
        candV = cand
    else:
        candB = topn_mask(B, topn) & (B > 0)  # tantivy returns only matching documents
        candV = topn_mask(V, topn)
        cand = candB | candV
        if fetch_neighbours:
            cand = neighbours_of(cand, conv)
    bm = np.where(candB, B, 0.0)  # BM25 is known only for the lexical retriever's hits
    if strict_cosine:
        # Cosine known only for the vector retriever's hits; others get the lowest known cosine.
        floor = np.where(candV, V, np.inf).min(1, keepdims=True)
        cs = np.where(candV, V, floor)
    else:
        cs = V  # production computes the cosine of every candidate from its stored vector
    norm = p["norm"]
    if norm == "max_minmax":
        nb, nc = masked_max(bm, cand), masked_minmax(cs, cand)
    elif norm == "minmax":
        nb, nc = masked_minmax(bm, cand), masked_minmax(cs, cand)
    elif norm == "max":
        nb, nc = masked_max(bm, cand), masked_max(cs, cand)
    elif norm == "rrf":
        k = 60
        nb = np.where(candB, (k + 1) / (k + ranks(bm, candB)), 0.0)
        nc = np.where(cand, (k + 1) / (k + ranks(cs, cand)), 0.0)
    else:
        raise ValueError(norm)
    f = np.where(cand, p["w"] * nb + (1 - p["w"]) * nc, 0.0)
    g = f.copy()
    if p["a"] > 0:
        fp = np.zeros_like(f); fn = np.zeros_like(f)
        hp, hn = conv.prev >= 0, conv.next >= 0
        fp[:, hp] = f[:, conv.prev[hp]]
        fn[:, hn] = f[:, conv.next[hn]]
        if p["nmode"] == "max":
            nbh = np.maximum(fp, fn)
        elif p["nmode"] == "mean":
            nbh = (fp + fn) / 2
        else:
            raise ValueError(p["nmode"])
        g = g + p["a"] * nbh
    if p["s"] > 0:
        smax = np.maximum.reduceat(np.where(cand, f, 0.0), conv.seg_start, axis=1)
        g = g + p["s"] * smax[:, conv.seg_id]
    if p["sp"] > 0:
        g = g + p["sp"] * conv.M
    return np.where(cand, g, -np.inf)

def evaluate(conv, S):
    """Per-question (r5, r10, ndcg10) over valid questions; ties broken by note order."""
    S = S[conv.valid]
    R = conv.R[conv.valid]
    nrel = conv.nrel[conv.valid]
    order = np.argsort(-S, axis=1, kind="stable")[:, :10]
    hits = np.take_along_axis(R, order, axis=1).astype(float)
    r5 = hits[:, :5].sum(1) / nrel
    r10 = hits.sum(1) / nrel
    disc = 1 / np.log2(np.arange(2, 12))
    dcg = (hits * disc).sum(1)
    idcg = np.array([disc[:min(n, 10)].sum() for n in nrel])
    return r5, r10, dcg / idcg

def rrf(conv, bvar, vvar, k=60, topn=None):
    B, V = conv.B[bvar], conv.V[vvar]
    candB = (B > 0) if topn is None else topn_mask(B, topn) & (B > 0)
    candV = topn_mask(V, topn)
    s = np.where(candB, 1 / (k + ranks(B, candB)), 0.0) + np.where(candV, 1 / (k + ranks(V, candV)), 0.0)
    return np.where(candB | candV, s, -np.inf)
