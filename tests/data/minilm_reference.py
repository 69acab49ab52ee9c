# Run: python3 -m venv v && v/bin/pip install numpy safetensors tokenizers && v/bin/python tests/data/minilm_reference.py <model dir>
# The values pinned in actors/src/embed/neural.rs (a_vector_matches_an_independent_reference) come from here.
# torch (for sentence-transformers itself) is not used: its PyPI wheel brings gigabytes of CUDA libraries.
# Independent reference: BERT forward in numpy from the same files, sentence-transformers' pipeline
# (mean pooling over the mask, L2 normalise). Prints the first 8 dims of each sentence's vector.
import json, sys, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
d = sys.argv[1]
w = load_file(f"{d}/model.safetensors")
cfg = json.load(open(f"{d}/config.json"))
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
tok.enable_truncation(256)
tok.no_padding()
H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
eps = cfg["layer_norm_eps"]
def g(k):
    for p in ("", "bert."):
        if p + k in w: return w[p + k].astype(np.float64)
    raise KeyError(k)
def ln(x, p): m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True); return (x - m) / np.sqrt(v + eps) * g(p + ".weight") + g(p + ".bias")
from math import erf, sqrt
verf = np.vectorize(erf)
def gelu(x): return 0.5 * x * (1 + verf(x / sqrt(2)))
def lin(x, p): return x @ g(p + ".weight").T + g(p + ".bias")
def embed(text):
    e = tok.encode(text); ids = np.array(e.ids); n = len(ids)
    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[:n] + g("embeddings.token_type_embeddings.weight")[0]
    x = ln(x, "embeddings.LayerNorm")
    hd = H // nh
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = lin(x, p + ".attention.self.query").reshape(n, nh, hd).transpose(1, 0, 2)
        k = lin(x, p + ".attention.self.key").reshape(n, nh, hd).transpose(1, 0, 2)
        v = lin(x, p + ".attention.self.value").reshape(n, nh, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd); s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, H)
        x = ln(lin(a, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
        h = gelu(lin(x, p + ".intermediate.dense"))
        x = ln(lin(h, p + ".output.dense") + x, p + ".output.LayerNorm")
    m = x.mean(0); return m / np.linalg.norm(m)
for t in ["How do I reset my password?", "I forgot my password, how can I change it?", "What's the weather in Paris?"]:
    v = embed(t); print(json.dumps({"text": t, "head": [round(float(f), 6) for f in v[:8]]}))
a, b, c = (embed(t) for t in ["How do I reset my password?", "I forgot my password, how can I change it?", "What's the weather in Paris?"])
print("cos paraphrase", float(a @ b), "cos unrelated", float(a @ c))
