"""Generation as a task kind: reading pairs, prompt encoding with target-only loss, left-padded
batches, batched decoding, the fine-tuning path (tiny GPT, T5, LoRA), saved directories that
load in plain transformers and `pipeline`, `pretune generate`, and the bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

from pretune.config import DecodeConfig, FinetuneConfig, GenTaskConfig, load_config
from pretune.data.pairs import GenSplit, PromptFormat, encode_pairs, load_gen_task, read_pairs
from pretune.errors import PretuneError
from pretune.evaluate.metrics import generation_metrics
from pretune.finetune.generate import generate
from pretune.finetune.predict import evaluate, predict
from pretune.finetune.run import finetune
from pretune.models.generate import generate_texts, lm_batch, lm_loss, pad_batch
from pretune.tasks import get_kind, kind_of_model_dir

QUIET = ["train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory, rt_rows) -> Path:
    """Review snippet -> its first three words (a task a one-layer model learns a little of)."""
    path = tmp_path_factory.mktemp("gen") / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in rt_rows[:240]:
            text = " ".join(r["text"].split()[:30])
            f.write(json.dumps({"input": text, "target": " ".join(text.split()[:3])}) + "\n")
    return path


def gen_cfg(tmp_path: Path, pairs: Path, tokenizer: Path, *overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, [
        f"output_dir={tmp_path / 'runs'}", f"task.path={pairs}", "task.target_field=target",
        "model.name=gpt-tiny", "model.overrides.n_embd=32", "model.overrides.n_layer=1",
        "model.overrides.n_head=2", f"tokenizer={tokenizer}", "task.test_size=24",
        "task.val_size=16", "task.max_length=64", "task.max_target_length=16",
        "task.decode.max_new_tokens=6", "train.epochs=6", "train.batch_size=16", "optim.lr=3e-3",
        *QUIET, *overrides])


# --------------------------------------------------------------------------- config + data


def test_config_kind_inferred_and_strategies_checked(tmp_path):
    cfg = load_config(FinetuneConfig, None, ["task.path=x.jsonl", "task.target_field=y"])
    assert cfg.task.kind == "generation" and cfg.model.name == "builtin:smollm2"
    with pytest.raises(PretuneError, match="does not apply to generation"):
        load_config(FinetuneConfig, None, ["task.kind=generation", "strategy.name=linear-probe"])
    with pytest.raises(PretuneError, match="corrupt the targets"):
        load_config(FinetuneConfig, None, ["task.kind=generation", "augment.token_mask_prob=0.1"])


def test_read_pairs_columns_chat_and_errors(tmp_path):
    cfg = GenTaskConfig()
    bad = tmp_path / "bad.csv"
    bad.write_text("text,summary\na,b\n")
    with pytest.raises(PretuneError, match="no column 'input'.*columns: text, summary"):
        read_pairs(str(bad), cfg)
    empty = tmp_path / "empty.csv"
    empty.write_text("input,target\na,b\nc, \n")
    with pytest.raises(PretuneError, match="row 2: empty target"):
        read_pairs(str(empty), cfg)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    split = read_pairs(str(chat), cfg)
    assert split.sources == [[{"role": "user", "content": "hi"}]] and split.targets == ["hello"]
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(PretuneError, match="last message must be the assistant"):
        read_pairs(str(chat), cfg)


def test_splits_budget_and_lead_baseline(pairs_file):
    cfg = GenTaskConfig(path=str(pairs_file), test_size=24, val_size=16, budget=50)
    task = load_gen_task(cfg, seed=1)
    assert (len(task.train), len(task.val), len(task.test)) == (50, 16, 24)
    again = load_gen_task(cfg.model_copy(update={"budget": None}))
    assert again.test.targets == task.test.targets  # splits do not depend on the budget
    # the target is the input's first 3 words, and the lead baseline is the first 3 words
    assert task.baseline == pytest.approx(1.0) and "lead-3" in task.info["baseline"]


def test_news_headlines_builtin():
    task = load_gen_task(GenTaskConfig(test_size=50, val_size=20))
    assert len(task.train) > 3000 and len(task.test) == 50
    assert "{input}" in task.template and all(t and "\n" not in t for t in task.test.targets)
    assert 0.05 < task.baseline < 0.5


def test_encode_masks_the_prompt_and_cuts_long_inputs(bpe_dir):
    tok = AutoTokenizer.from_pretrained(bpe_dir)
    fmt = PromptFormat("Q: {input}\nA:")
    long = " ".join(["the movie was good"] * 50)
    split = GenSplit(["short one", long], ["yes it was", "no"])
    enc = encode_pairs(tok, split, fmt, 48, 8, seq2seq=False, eos_id=tok.eos_token_id)
    assert enc.cut_inputs == 1 and enc.cut_targets == 0
    for ids, labels, prompt in zip(enc.input_ids, enc.labels, enc.prompts, strict=True):
        assert len(ids) <= 48 and ids[: len(prompt)] == prompt
        assert labels[: len(prompt)] == [-100] * len(prompt)
        assert labels[-1] == tok.eos_token_id
    # the template around the cut input survives
    assert tok.decode(enc.prompts[1]).startswith("Q: the movie") and \
        tok.decode(enc.prompts[1]).endswith("\nA:")
    assert tok.decode(enc.labels[0][len(enc.prompts[0]):-1]) == "yes it was"


def test_left_padded_target_span_loss_equals_full_logit_loss(bpe_dir, tiny_gpt):
    """lm_batch keeps only the target span's logits; the loss equals HF's own."""
    from pretune.models.registry import load_model

    tok = AutoTokenizer.from_pretrained(bpe_dir)
    model = load_model(tiny_gpt, "clm", tok).eval()
    enc = encode_pairs(tok, GenSplit(["a great film", "an utterly dull and long film"],
                                     ["fresh", "rotten it is"]), PromptFormat(), 64, 8,
                       seq2seq=False, eos_id=tok.eos_token_id)
    batch = lm_batch(enc.input_ids, enc.labels, tok.eos_token_id, seq2seq=False)
    assert batch["input_ids"].shape[1] > batch["labels"].shape[1]
    ours = lm_loss(model, batch)
    total, count = 0.0, 0
    for ids, labels in zip(enc.input_ids, enc.labels, strict=True):  # one example at a time
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        n = sum(1 for v in labels[1:] if v != -100)
        total, count = total + out.loss.item() * n, count + n
    assert ours.item() == pytest.approx(total / count, rel=1e-4)


def test_batched_generation_equals_one_at_a_time(bpe_dir, tiny_gpt):
    from pretune.models.registry import load_model

    tok = AutoTokenizer.from_pretrained(bpe_dir)
    torch.manual_seed(0)
    model = load_model(tiny_gpt, "clm", tok).eval()
    prompts = [tok(t)["input_ids"] for t in ("a", "the film was a long and tedious", "it is")]
    decode = DecodeConfig(max_new_tokens=5, batch_size=3)
    eos = [tok.eos_token_id]
    batched = generate_texts(model, tok, prompts, decode, torch.device("cpu"), eos[0], eos)
    single = [generate_texts(model, tok, [p], decode, torch.device("cpu"), eos[0], eos)[0]
              for p in prompts]
    assert batched == single
    assert pad_batch([[5], [6, 7]], 0, left=True)["input_ids"].tolist() == [[0, 5], [6, 7]]


def test_generation_metrics_scale_and_cjk():
    m = generation_metrics(["The cat sat on the mat", "Dogs run"], ["the cat sat", "dogs run."],
                           nll=10.0, tokens=5)
    assert m["exact_match"] == 0.5 and 0 < m["rougeL"] < 1 and 0 <= m["bleu"] <= 1
    assert m["loss"] == 2.0 and m["perplexity"] == pytest.approx(np.exp(2.0))
    assert generation_metrics(["北京召开会议"], ["北京开会"])["rouge1"] > 0.5


# --------------------------------------------------------------------------- fine-tuning


def test_gpt_finetune_lowers_perplexity_saves_and_round_trips(tmp_path, pairs_file, bpe_dir):
    zero = finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "name=zero", "strategy.name=prompt"))
    res = finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "name=full"))
    assert res.steps > 0 and res.metrics["perplexity"] < 0.5 * zero.metrics["perplexity"]
    metrics = json.loads((res.out_dir / "metrics.json").read_text())
    assert metrics["kind"] == "generation" and metrics["selection_metric"] == "rougeL"
    model_dir = res.out_dir / "model"
    assert not (zero.out_dir / "model").exists()  # prompting updates nothing: no copy saved
    assert kind_of_model_dir(model_dir).name == "generation"
    card = (model_dir / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "AutoModelForCausalLM" in card

    # plain transformers + pipeline give what `pretune generate` gives (greedy)
    inputs = tmp_path / "in.txt"
    inputs.write_text("a sweet and funny film\nthe plot is a mess\n")
    out = tmp_path / "gen.jsonl"
    assert generate(str(model_dir), str(inputs), str(out)) == 2
    ours = [json.loads(line)["generated"] for line in out.read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    for text, mine in zip(["a sweet and funny film", "the plot is a mess"], ours, strict=True):
        full = pipe(text, max_new_tokens=6, do_sample=False, return_full_text=False)
        assert full[0]["generated_text"].strip() == mine
    # evaluate on a labeled file and predict write the kind's outputs
    m = evaluate(str(model_dir), str(pairs_file), ["task.decode.max_new_tokens=4"])
    assert {"rougeL", "perplexity"} <= set(m)
    pred = predict(str(model_dir), str(inputs), str(tmp_path / "p.jsonl"))
    assert [json.loads(line)["generated"] for line in pred.read_text().splitlines()] == ours


def test_select_on_val_loss_skips_generation(tmp_path, pairs_file, bpe_dir):
    res = finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "metric=loss", "train.epochs=2",
                           "save_model=false"))
    log = (res.out_dir / "metrics.json").read_text()
    assert json.loads(log)["selection_metric"] == "loss" and "rougeL" in res.metrics


def test_random_t5_starts_near_uniform_loss(bpe_dir):
    from pretune.config import ModelConfig
    from pretune.models.registry import load_model

    tok = AutoTokenizer.from_pretrained(bpe_dir)
    torch.manual_seed(0)
    model = load_model(ModelConfig(name="t5-tiny"), "seq2seq", tok)
    enc = encode_pairs(tok, GenSplit(["a great film", "so dull"], ["fresh", "rotten"]),
                       PromptFormat(), 32, 8, seq2seq=True, eos_id=tok.eos_token_id)
    loss = lm_loss(model, lm_batch(enc.input_ids, enc.labels, tok.pad_token_id, seq2seq=True))
    assert loss.item() < 1.5 * np.log(len(tok))


def test_t5_tiny_trains_and_loads_as_seq2seq(tmp_path, pairs_file, bpe_dir):
    res = finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "model.name=t5-tiny",
                           "model.overrides={}", "train.epochs=2", "optim.lr=1e-3"))
    model_dir = res.out_dir / "model"
    assert "text2text-generation" in (model_dir / "README.md").read_text()
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    assert model.config.model_type == "t5" and res.metrics["perplexity"] > 0
    out = tmp_path / "t5.jsonl"
    generate(str(model_dir), str(pairs_file), str(out), ["decode.max_new_tokens=3"])
    assert len(out.read_text().splitlines()) == 240


def test_lora_gpt_merges_on_export(tmp_path, pairs_file, bpe_dir):
    res = finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "strategy.name=lora",
                           "train.epochs=1", "model.overrides.n_embd=64"))
    assert 0 < res.trainable_params < 20_000  # adapters only: the tied LM head stays frozen
    model = AutoModelForCausalLM.from_pretrained(res.out_dir / "model")
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_few_shot_prompt_puts_examples_in_the_prompt(tmp_path, pairs_file, bpe_dir):
    cfg = gen_cfg(tmp_path, pairs_file, bpe_dir, "strategy.name=prompt", "task.shots=2",
                  "task.max_length=256")
    kind = get_kind("generation")
    task = kind.load(cfg)
    from pretune.models.start import resolve_start

    loaded = kind.load_model(cfg, task, resolve_start(cfg.model.name))
    assert len(loaded.processor.fmt.shots) == 2
    prompt = loaded.processor.fmt.render(loaded.processor.tokenizer, "a new review")
    first_source, first_target = loaded.processor.fmt.shots[0]
    assert prompt.startswith(first_source) and f" {first_target}\n\n" in prompt


# --------------------------------------------------------------------------- bad input


def test_bad_starts_and_tokenizers(tmp_path, pairs_file, bpe_dir, wordpiece_dir, make_cfg):
    with pytest.raises(PretuneError, match="generation needs a decoder"):
        finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "model.name=bert-tiny",
                         "model.overrides={}"), overwrite=True)
    with pytest.raises(PretuneError, match="has no chat template"):
        finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "task.chat_template=true"), overwrite=True)
    with pytest.raises(PretuneError, match="exceeds the 32-token context"):
        finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "model.overrides.n_positions=32"), overwrite=True)
    tok = AutoTokenizer.from_pretrained(bpe_dir)
    tok.eos_token = tok.pad_token = None
    no_eos = tmp_path / "no-eos"
    tok.save_pretrained(no_eos)
    with pytest.raises(PretuneError, match="no end-of-sequence token"):
        finetune(gen_cfg(tmp_path, pairs_file, no_eos), overwrite=True)
    clf = finetune(make_cfg(name="clf", save_model=True))  # a classifier cannot generate
    with pytest.raises(PretuneError, match="a classifier.*cannot generate"):
        generate(str(clf.out_dir / "model"), str(pairs_file))


def test_cli_generate_streams_one_prompt_from_stdin(tmp_path, pairs_file, bpe_dir):
    res = finetune(gen_cfg(tmp_path, pairs_file, bpe_dir, "train.epochs=1"))
    run = subprocess.run([sys.executable, "-m", "pretune.cli", "generate",
                          str(res.out_dir / "model"), "-", "decode.max_new_tokens=4"],
                         input="a sweet film\n", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(x) for x in subprocess.run(
        [sys.executable, "-m", "pretune.cli", "generate", str(res.out_dir / "model"), "-"],
        input="a sweet film\nthe worst\n", capture_output=True, text=True,
        timeout=120).stdout.splitlines()]
    assert [x["input"] for x in lines] == ["a sweet film", "the worst"]
    assert run.stdout.strip() == generate_one(res.out_dir / "model", "a sweet film", 4)
    bad = subprocess.run([sys.executable, "-m", "pretune.cli", "generate",
                          str(res.out_dir / "model"), str(tmp_path / "missing.txt")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not found" in bad.stderr


def generate_one(model_dir: Path, text: str, n: int) -> str:
    out = model_dir.parent / "one.jsonl"
    src = model_dir.parent / "one.txt"
    src.write_text(text + "\n")
    generate(str(model_dir), str(src), str(out), [f"decode.max_new_tokens={n}"])
    return json.loads(out.read_text())["generated"]


def test_awkward_inputs_and_checkpoint_settings(tmp_path, bpe_dir, tiny_gpt):
    """Empty inputs train (the prompt gets the end-of-text id), a stop string at the end of the
    template does not stop generation at once, a checkpoint with sampling defaults still
    saves, chat rows in a CSV generate, and a template override with a colon stays text."""
    from transformers import GenerationConfig

    from pretune.models.registry import load_model

    tok = AutoTokenizer.from_pretrained(bpe_dir)
    start = tmp_path / "start"
    model = load_model(tiny_gpt, "clm", tok)
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_k=20,
                                               eos_token_id=tok.eos_token_id)
    model.save_pretrained(start)
    tok.save_pretrained(start)
    data = tmp_path / "d.csv"
    rows = ["input,target"] + [f"{'' if i % 3 == 0 else 'review ' + str(i)},fine {i}"
                               for i in range(60)]
    data.write_text("\n".join(rows) + "\n")
    res = finetune(load_config(FinetuneConfig, None, [
        f"output_dir={tmp_path / 'runs'}", f"task.path={data}", "task.kind=generation",
        f"model.name={start}", "task.test_size=10", "task.val_size=5", "task.max_length=32",
        "task.template={input}\n", 'task.decode.stop=["\n"]', "task.decode.max_new_tokens=4",
        "train.epochs=1", *QUIET]))
    model_dir = res.out_dir / "model"
    assert (model_dir / "generation_config.json").is_file()
    chat = tmp_path / "chat.csv"
    turns = json.dumps([{"role": "user", "content": "hi"}]).replace('"', '""')
    chat.write_text(f'messages\n"{turns}"\n')
    out = tmp_path / "c.jsonl"
    assert generate(str(model_dir), str(chat), str(out), ["chat_template=false"]) == 1
    assert generate(str(model_dir), str(chat), str(out), ["template=Say: {input} ->"],
                    overwrite=True) == 1
    with pytest.raises(PretuneError, match="config error in overrides: 'decode.num_beams'"):
        generate(str(model_dir), str(chat), str(out), ["decode.num_beams=0"], overwrite=True)
