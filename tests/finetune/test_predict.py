"""evaluate / predict on a saved model dir: round trips against the model's own outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pretune.data.batches import encode
from pretune.data.labeled import load_task
from pretune.errors import PretuneError
from pretune.evaluate.metrics import task_metrics
from pretune.finetune.predict import evaluate, predict
from pretune.finetune.run import save_model_dir
from pretune.models.registry import load_model
from pretune.tasks import KINDS
from pretune.tasks.text_classification import PROBLEM_TYPES, model_outputs


@pytest.fixture()
def model_dir(tmp_path, make_cfg, wordpiece_dir):
    """A saved (untrained, seeded) tiny classifier dir, as ``finetune`` writes it."""
    cfg = make_cfg()
    task = load_task(cfg.task)
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    torch.manual_seed(0)
    model = load_model(cfg.model, "classify", tok, num_labels=2,
                       problem_type=PROBLEM_TYPES["single_label"], id2label={0: "fresh", 1: "rotten"})
    kind = KINDS["text-classification"]
    return save_model_dir(tmp_path / "model", lambda p: kind.save(model, tok, p, cfg, task),
                          "# card\n")


def _own_probs(model_dir, texts):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model_outputs(model, encode(tok, texts, None, 48), "single_label")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_predict_round_trip(model_dir, tmp_path, rt_rows, fmt):
    rows = [{"id": i, **r} for i, r in enumerate(rt_rows[:30])]
    src = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        with open(src, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "text", "label"])
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), src)
    out = predict(str(model_dir), str(src), str(tmp_path / "pred.csv"))
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["id", "text", "label", "pred", "prob_fresh", "prob_rotten"]
    probs = _own_probs(model_dir, [r["text"] for r in rows])
    assert [g["pred"] for g in got] == [["fresh", "rotten"][i] for i in probs.argmax(1)]
    written = np.array([[float(g["prob_fresh"]), float(g["prob_rotten"])] for g in got])
    assert np.allclose(written, probs, atol=1e-5)
    assert [g["text"] for g in got] == [r["text"] for r in rows]


def test_evaluate_file_and_builtin(model_dir, rt_csv, capsys):
    metrics = evaluate(str(model_dir), str(rt_csv))
    with open(rt_csv, newline="") as f:
        task_rows = list(csv.DictReader(f))
    probs = _own_probs(model_dir, [r["text"] for r in task_rows])
    y = [["fresh", "rotten"].index(r["label"]) for r in task_rows]
    assert metrics["accuracy"] == pytest.approx(task_metrics("single_label", y, probs,
                                                             ["fresh", "rotten"])["accuracy"])
    saved = json.loads((model_dir / "eval-rt.json").read_text())
    assert saved["examples"] == 300 and "macro_f1" in capsys.readouterr().out
    # builtin task -> its test split with the model's split settings (test_size=60 here)
    bi = evaluate(str(model_dir), "builtin:rotten-tomatoes", ["max_length=16", "test_size=60"])
    assert sum(bi["per_class"][c]["support"] for c in ("fresh", "rotten")) == 60
    assert (model_dir / "eval-rotten-tomatoes.json").is_file()


def test_bad_model_dirs_and_inputs(model_dir, tmp_path, rt_csv, tiny_bert, wordpiece_dir):
    with pytest.raises(PretuneError, match="not a model directory"):
        evaluate(str(tmp_path), str(rt_csv))
    mlm_dir = tmp_path / "mlm"
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    load_model(tiny_bert, "mlm", tok).save_pretrained(mlm_dir)
    with pytest.raises(PretuneError, match="not a sequence classifier"):
        predict(str(mlm_dir), str(rt_csv), str(tmp_path / "p.csv"))
    with pytest.raises(PretuneError, match="no column 'body'.*text_field"):
        predict(str(model_dir), str(rt_csv), str(tmp_path / "p.csv"), ["text_field=body"])
    odd = tmp_path / "odd.csv"
    odd.write_text("text,label\nnice,fresh\nbad,meh\n")
    with pytest.raises(PretuneError, match="labels the model was not trained on: meh"):
        evaluate(str(model_dir), str(odd))
    with pytest.raises(PretuneError, match="not builtin"):
        predict(str(model_dir), "builtin:rotten-tomatoes", str(tmp_path / "p.csv"))


def test_outputs_never_lose_a_file(model_dir, tmp_path, rt_csv):
    data = tmp_path / "in.csv"
    data.write_bytes(rt_csv.read_bytes())
    with pytest.raises(PretuneError, match="is the input file"):
        predict(str(model_dir), str(data), str(data), overwrite=True)
    assert data.read_bytes() == rt_csv.read_bytes()
    with pytest.raises(PretuneError, match="is a directory"):
        predict(str(model_dir), str(data), str(tmp_path))
    out = tmp_path / "p.csv"
    predict(str(model_dir), str(data), str(out))
    first = out.read_bytes()
    out.write_text("my notes\n")
    with pytest.raises(PretuneError, match="already exists; pass --overwrite"):
        predict(str(model_dir), str(data), str(out))
    assert out.read_text() == "my notes\n"
    predict(str(model_dir), str(data), str(out), overwrite=True)
    assert out.read_bytes() == first


def test_bad_overrides_and_weights_are_one_line_errors(model_dir, tmp_path, rt_csv):
    with pytest.raises(PretuneError, match="max_length.*integer"):
        evaluate(str(model_dir), str(rt_csv), ["max_length=abc"])
    with pytest.raises(PretuneError, match="'bogus': unknown key"):
        predict(str(model_dir), str(rt_csv), str(tmp_path / "p.csv"), ["bogus=1"])
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    for f in ("config.json", "pretune_task.json", "tokenizer.json", "tokenizer_config.json"):
        if (model_dir / f).exists():
            (decoy / f).write_bytes((model_dir / f).read_bytes())
    import torch as _t
    _t.save({"w": _t.zeros(1)}, decoy / "pytorch_model.bin")
    (decoy / "adapter_model.safetensors").write_bytes(b"")  # a decoy: not the model weights
    with pytest.raises(PretuneError, match=r"no model.safetensors \(found .*pytorch_model.bin"):
        evaluate(str(decoy), str(rt_csv))
    (decoy / "model.safetensors").write_bytes(b"\x00" * 4)  # a broken file
    with pytest.raises(PretuneError, match="model.safetensors is not a readable safetensors"):
        evaluate(str(decoy), str(rt_csv))


def test_predict_plain_text_one_input_per_line(model_dir, tmp_path, rt_rows):
    texts = [r["text"] for r in rt_rows[:5]]
    src = tmp_path / "new.txt"
    src.write_text("\n".join(texts) + "\n\n")
    out = predict(str(model_dir), str(src), str(tmp_path / "pred.csv"))
    got = list(csv.DictReader(out.open(newline="")))
    assert [g["text"] for g in got] == texts and list(got[0]) == ["text", "pred", "prob_fresh",
                                                                  "prob_rotten"]
