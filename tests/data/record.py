"""How tests/data/stored-answers.json was made: run with lenet-lab at 33d1504 (before the
results layer; these imports are that version's) in the folder of the studies.db it reads."""

import json

from lenet_lab.report.build import best_confirmed, load_study, study_answer

from lenet_lab import store
from lenet_lab.report import compute
from lenet_lab.report.activations import study_networks

url = "sqlite:///studies.db"
out = {"studies": {}, "best_confirmed": {}}
db = store.connect(url, read_only=True)
for row in store.list_studies(url):
    name = row["study"]
    a = study_answer(url, name)
    data = load_study(db, name)
    names = compute.arm_names(data.results)
    out["studies"][name] = {
        "headline": a.headline, "verdicts": a.verdicts, "one_line": a.one_line(),
        "keys": {arm: [n.key, n.label] for arm, n in names.items()},
        "shown": [x.key for x in compute.shown_arms(a.arms)],
        "networks": [list(p) for p in study_networks(data.results)],
    }
for sweep in ("improve", "search-relu"):
    found = best_confirmed(url, sweep, engine="torch")
    out["best_confirmed"][sweep] = None if found is None else [found[0], found[1], {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(found[2].items())}]
json.dump(out, open("answers.json", "w"), indent=1, sort_keys=True)
print(json.dumps(out["best_confirmed"], indent=1))
