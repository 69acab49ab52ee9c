"""Shared pieces: corpus loading, tantivy-like BM25, embeddings, metrics."""
import json, re, math
import numpy as np
import snowballstemmer

CONVS = ["26", "30", "41", "42", "43", "44", "47"]
DATA = "/tmp/kbrank/data"

# Lucene's / tantivy's English stop-word list (tantivy::tokenizer::StopWordFilter, Language::English).
STOP = set("a an and are as at be but by for if in into is it no not of on or such that the their then "
           "there these they this to was will with".split())
_stem = snowballstemmer.stemmer("english")  # tantivy's Stemmer(Language::English) is Snowball English too

def tokens(text, stem=False, stop=True, stoplist=None):
    # tantivy's SimpleTokenizer: split on anything not alphanumeric; then LowerCaser; then
    # RemoveLongFilter(40) (irrelevant here); optional StopWordFilter and Stemmer.
    toks = [t.lower() for t in re.split(r"[^0-9A-Za-z\u00C0-\uFFFF]+", text) if t]
    toks = [t for t in toks if len(t) < 40]
    if stop:
        toks = [t for t in toks if t not in (stoplist or STOP)]
    if stem:
        toks = _stem.stemWords(toks)
    return toks

def bm25_matrix(doc_texts, queries, k1=1.2, b=0.75, stem=False, stoplist=None):
    """Okapi BM25 with tantivy's idf ln(1 + (N - n + 0.5) / (n + 0.5)); returns [Q, N]."""
    docs = [tokens(t, stem, stoplist=stoplist) for t in doc_texts]
    N = len(docs)
    avgdl = sum(len(d) for d in docs) / N
    df = {}
    tfs = []
    for d in docs:
        tf = {}
        for t in d:
            tf[t] = tf.get(t, 0) + 1
        tfs.append(tf)
        for t in tf:
            df[t] = df.get(t, 0) + 1
    out = np.zeros((len(queries), N), dtype=np.float64)
    for qi, q in enumerate(queries):
        qt = set(tokens(q, stem, stoplist=stoplist))
        for t in qt:
            if t not in df:
                continue
            idf = math.log(1 + (N - df[t] + 0.5) / (df[t] + 0.5))
            for di, tf in enumerate(tfs):
                f = tf.get(t)
                if f:
                    out[qi, di] += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(docs[di]) / avgdl))
    return out

def load_corpus():
    return json.load(open(f"{DATA}/corpus.json"))

def load_vecs(name, n):
    v = np.fromfile(f"{DATA}/emb/{name}.f32", dtype="<f4").reshape(-1, 384)
    assert v.shape[0] == n, (name, v.shape, n)
    return v.astype(np.float64)

def metrics(scores, rel_lists, ids):
    """scores [Q, N]; rel_lists: per question list of relevant note indices. Returns per-question
    arrays (r5, r10, ndcg10), skipping questions with no (existing) evidence (NaN)."""
    Q = scores.shape[0]
    r5 = np.full(Q, np.nan); r10 = np.full(Q, np.nan); nd = np.full(Q, np.nan)
    # Stable tie-break by note order (as a sort by (-score, index) would).
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    for q in range(Q):
        rel = rel_lists[q]
        if not rel:
            continue
        rs = set(rel)
        top = order[q]
        hits = [1 if i in rs else 0 for i in top]
        r5[q] = sum(hits[:5]) / len(rs)
        r10[q] = sum(hits) / len(rs)
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rs), 10)))
        nd[q] = dcg / idcg
    return r5, r10, nd

# NLTK's English stop-word list (179 words), usable in tantivy via StopWordFilter::remove(list).
NLTK_STOP = set("""i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their theirs themselves
what which who whom this that that'll these those am is are was were be been being have has had having do does
did doing a an the and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same so than too very s t can
will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn
doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan
shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't""".split())
