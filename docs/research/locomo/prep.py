"""Flattens the LoCoMo conversations into notes and queries, and writes the texts to embed.

Note fields (generic, as production notes would have them):
  id (dia_id), thread (session number), position (turn index within the session),
  author (speaker), created_at (session date, ms), text, caption (blip_caption or "").
Text variants embedded (decided up front):
  raw      : text
  cap      : text + " [image: caption]" when a caption exists
  spk_cap  : "author: " + cap
  date_spk_cap : "[created_at date] author: " + cap
Queries are embedded as the raw question text.
"""
import json, re, datetime, os
SRC = "/work/shared/bench-data/locomo"
CONVS = ["26", "30", "41", "42", "43", "44", "47"]

def parse_date(s):
    # e.g. "1:56 pm on 8 May, 2023"
    return datetime.datetime.strptime(s.strip(), "%I:%M %p on %d %B, %Y")

def load(conv):
    d = json.load(open(f"{SRC}/{conv}.json"))
    notes = []
    sessions = sorted(int(m.group(1)) for k in d for m in [re.fullmatch(r"session_(\d+)", k)] if m)
    for s in sessions:
        dt = parse_date(d[f"session_{s}_date_time"])
        for pos, t in enumerate(d[f"session_{s}"]):
            notes.append(dict(id=t["dia_id"], thread=s, position=pos, author=t["speaker"],
                              created_at=int(dt.timestamp() * 1000), date=dt.strftime("%d %B %Y"),
                              text=t["text"], caption=t.get("blip_caption") or ""))
    ids = {n["id"] for n in notes}
    qs = []
    for q in d["qa"]:
        if q["category"] == 5:
            continue
        ev = sorted({e.strip() for e in q["evidence"] if e.strip() in ids})
        qs.append(dict(question=q["question"], evidence=ev, category=q["category"]))
    return notes, qs

def variants(n):
    cap = n["text"] + (f" [image: {n['caption']}]" if n["caption"] else "")
    return {"raw": n["text"], "cap": cap, "spk_cap": f"{n['author']}: {cap}",
            "date_spk_cap": f"[{n['date']}] {n['author']}: {cap}"}

if __name__ == "__main__":
    out = {}
    data = {}
    for c in CONVS:
        notes, qs = load(c)
        data[c] = dict(notes=notes, qs=qs)
        for v in ["raw", "cap", "spk_cap", "date_spk_cap"]:
            out[f"{c}_{v}"] = [variants(n)[v] for n in notes]
        out[f"{c}_q"] = [q["question"] for q in qs]
        print(c, len(notes), "notes", len(qs), "questions", sum(1 for q in qs if not q["evidence"]), "without evidence")
    json.dump(out, open("/tmp/kbrank/data/texts.json", "w"))
    json.dump(data, open("/tmp/kbrank/data/corpus.json", "w"))
